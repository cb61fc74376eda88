//! `CLIPTextModel`: the prompt's token ids → the hidden states the UNet attends to.
//!
//! SD 1.x uses OpenAI's CLIP ViT-L/14 text tower (quick-GELU), SD 2.x OpenCLIP ViT-H/14's
//! (GELU; diffusers' conversion already drops its last layer). `clip_skip` selects an
//! earlier layer, as diffusers pipelines do.

pub mod config;

use crate::nn::Linear;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

pub use config::{Activation, ClipTextConfig};

use crate::error::{ModelError, Result};
use crate::nn::attention::{merge_heads, scaled_dot_product_attention, split_heads};
use crate::nn::checkpoint::checkpoint;
use crate::nn::{kernels, LayerNorm};

/// The shape of one CLIP encoder layer; the text and vision towers share the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerDims {
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) hidden_act: Activation,
    pub(crate) layer_norm_eps: f64,
}

impl From<&ClipTextConfig> for LayerDims {
    fn from(cfg: &ClipTextConfig) -> Self {
        Self {
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_attention_heads: cfg.num_attention_heads,
            hidden_act: cfg.hidden_act,
            layer_norm_eps: cfg.layer_norm_eps,
        }
    }
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f64,
}

impl ClipAttention {
    fn new(cfg: &LayerDims, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: crate::nn::linear(d, d, vb.pp("q_proj"))?,
            k_proj: crate::nn::linear(d, d, vb.pp("k_proj"))?,
            v_proj: crate::nn::linear(d, d, vb.pp("v_proj"))?,
            out_proj: crate::nn::linear(d, d, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            scale: ((d / cfg.num_attention_heads) as f64).powf(-0.5),
        })
    }

    /// `causal_mask`: the text tower's `[n, n]` mask; `None` (the vision tower) attends
    /// everywhere.
    fn forward(&self, x: &Tensor, causal_mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if kernels::use_cpu_kernels(x) {
            // The fused kernel applies the causal mask itself and reads heads in place.
            let q = self.q_proj.forward(x)?;
            let k = self.k_proj.forward(x)?;
            let v = self.v_proj.forward(x)?;
            let out = kernels::attention::attention_heads(
                &q,
                &k,
                &v,
                self.heads,
                self.scale as f32,
                causal_mask.is_some(),
            )?;
            return self.out_proj.forward(&out);
        }
        let q = split_heads(&self.q_proj.forward(x)?, self.heads)?;
        let k = split_heads(&self.k_proj.forward(x)?, self.heads)?;
        let v = split_heads(&self.v_proj.forward(x)?, self.heads)?;
        let out = scaled_dot_product_attention(&q, &k, &v, self.scale, causal_mask)?;
        self.out_proj.forward(&merge_heads(&out)?)
    }
}

#[derive(Debug, Clone)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipMlp {
    fn new(cfg: &LayerDims, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            fc1: crate::nn::linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: crate::nn::linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(x)?;
        self.fc2.forward(&self.act.apply(&h)?)
    }
}

/// One pre-norm transformer layer (`layer_norm1`, `self_attn`, `layer_norm2`, `mlp`), as
/// transformers' `CLIPEncoderLayer`; shared with the vision tower.
#[derive(Debug, Clone)]
pub(crate) struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    pub(crate) fn new(cfg: &LayerDims, vb: VarBuilder) -> candle_core::Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
            mlp: ClipMlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// `x` `[b, n, hidden]`; `causal_mask` as in `ClipAttention::forward`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        causal_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let h = (self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, causal_mask)?
            + x)?;
        self.mlp.forward(&self.layer_norm2.forward(&h)?)? + &h
    }
}

/// What the text encoder returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[b, n, hidden]`: the selected layer's output after the final layer norm; this is
    /// what the UNet attends to.
    pub hidden_state: Tensor,
    /// `[b, hidden]`: `hidden_state` at each row's first end-of-text token.
    pub pooled: Tensor,
}

/// transformers' `CLIPTextModel`; weight names carry the `text_model.` prefix, and files
/// saved without it (transformers 5) load too.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
    gradient_checkpointing: bool,
}

impl ClipTextModel {
    /// Builds the text encoder from `vb` at the checkpoint root (it adds `text_model.`).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("text_model");
        let d = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding = Embedding::new(
            emb.pp("token_embedding")
                .get((config.vocab_size, d), "weight")?,
            d,
        );
        let position_embedding = emb
            .pp("position_embedding")
            .get((config.max_position_embeddings, d), "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&config.into(), vb.pp("encoder").pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm = LayerNorm::new(d, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            config: config.clone(),
            gradient_checkpointing: false,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Gradient checkpointing: every encoder layer keeps only its input in the forward
    /// pass and is recomputed during backward, which then needs
    /// [`crate::nn::checkpoint::backward`].
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    /// Whether gradient checkpointing is on.
    pub fn gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    /// The token embedding table `[vocab, hidden]` (Textual Inversion trains rows of it).
    pub fn token_embedding(&self) -> &Tensor {
        self.token_embedding.embeddings()
    }

    /// `input_ids` `[b, n]` → the last layer's hidden states `[b, n, hidden]` (after the
    /// final layer norm): what SD 1.x pipelines feed the UNet.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_clip_skip(input_ids, 0)?.hidden_state)
    }

    /// Like [`Self::forward`], skipping the last `clip_skip` layers (diffusers' `clip_skip`:
    /// 1 takes the penultimate layer), still through the final layer norm.
    pub fn forward_with_clip_skip(
        &self,
        input_ids: &Tensor,
        clip_skip: usize,
    ) -> Result<ClipTextOutput> {
        let (b, n) = input_ids.dims2().map_err(|_| {
            ModelError::BadInput(format!(
                "text encoder input_ids must be [batch, tokens], got {:?}",
                input_ids.dims()
            ))
        })?;
        if n > self.config.max_position_embeddings {
            return Err(ModelError::BadInput(format!(
                "{n} tokens, but the text encoder takes at most {}",
                self.config.max_position_embeddings
            )));
        }
        if clip_skip >= self.layers.len() {
            return Err(ModelError::BadInput(format!(
                "clip_skip {clip_skip} leaves no layer of {}",
                self.layers.len()
            )));
        }
        let ids = input_ids.to_dtype(DType::U32)?;
        let ids_host: Vec<Vec<u32>> = ids.to_vec2()?;
        if let Some(bad) = ids_host
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.config.vocab_size)
        {
            return Err(ModelError::BadInput(format!(
                "token id {bad} is outside the text encoder's vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let positions = self.position_embedding.narrow(0, 0, n)?;
        let mut h = self
            .token_embedding
            .forward(&ids)?
            .broadcast_add(&positions)?;
        let mask = causal_mask(n, h.dtype(), h.device())?;
        for layer in &self.layers[..self.layers.len() - clip_skip] {
            h = if self.gradient_checkpointing {
                let (layer, mask) = (layer.clone(), mask.clone());
                checkpoint(&[&h], move |i| layer.forward(&i[0], Some(&mask)))?
            } else {
                layer.forward(&h, Some(&mask))?
            };
        }
        let hidden_state = self.final_layer_norm.forward(&h)?;
        let eos: Vec<u32> = ids_host
            .iter()
            .map(|row| self.pooling_position(row) as u32)
            .collect();
        let eos = Tensor::from_vec(eos, (b, 1, 1), h.device())?
            .broadcast_as((b, 1, self.config.hidden_size))?
            .contiguous()?;
        let pooled = hidden_state.gather(&eos, 1)?.squeeze(1)?;
        Ok(ClipTextOutput {
            hidden_state,
            pooled,
        })
    }
}

impl ClipTextModel {
    /// The position whose state is pooled: the first end-of-text token, or, for configs
    /// with the legacy `eos_token_id = 2` (SD 1.5's), the highest id as transformers does.
    fn pooling_position(&self, row: &[u32]) -> usize {
        if self.config.eos_token_id == 2 {
            let max = row.iter().copied().max().unwrap_or(0);
            row.iter().position(|&t| t == max).unwrap_or(0)
        } else {
            row.iter()
                .position(|&t| t == self.config.eos_token_id)
                .unwrap_or(0)
        }
    }
}

/// `[n, n]` additive mask: 0 on and below the diagonal, -inf above.
fn causal_mask(n: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)?.to_dtype(dtype)
}
