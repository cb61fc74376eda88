//! How much memory a training run needs at its peak, estimated from the model configs
//! before anything is loaded, and the guard that refuses a run the machine cannot hold.
//!
//! The peak of a step comes at the end of the backward pass, when every parameter has its
//! gradient while the forward pass's activations are still held. candle keeps **every**
//! intermediate tensor of the forward pass alive until backward returns (each op holds its
//! inputs), not only what the backward needs as PyTorch does, so the activations are the
//! sum of the op outputs the model makes, walked block by block from the UNet config:
//!
//! - resnet `cin → cout` at `n = h·w` positions: `(cin + 5·cout)·n` (+`cout·n` with a
//!   1×1 shortcut): norm1+SiLU, conv1, +temb, norm2+SiLU, conv2, the residual sum;
//! - spatial transformer of `c` channels: `(6 + 38·layers)·c·n`: group norm, projections
//!   and token reshapes in and out, and per block layer norms, q/k/v, attention output,
//!   `to_out` (matmul + bias), residuals, the GEGLU feed-forward (`8·c` wide in, `4·c`
//!   gated) — plus, where attention is not the fused CPU kernel, the `[heads, n, n]`
//!   (self) and `[heads, n, 77]` (cross) scores, exp and probabilities (5 of each);
//! - skip concatenations, down/upsampling, conv_in/out; the CLIP text encoder's layers
//!   (`15·d + 3·mlp` per token) when gradients flow through it.
//!
//! With gradient checkpointing only each checkpointed segment's output (resnets and
//! transformers; text-encoder layers) stays, plus the largest segment recomputed at once.
//! A backward workspace (the gradients of the skip connections, held between the up and
//! the down path, and twice the largest single tensor) comes on top. Weights are f32 (the
//! engine up-casts), gradients f32 per trainable parameter (twice with gradient
//! accumulation). Mixed precision (`training.precision` bf16/fp16) keeps the f32 master
//! weights and adds their 2-byte compute copies, holds frozen UNet and text-encoder
//! weights (not the VAE's) in 2 bytes, and halves the activations and the workspace (the
//! f32 normalisation and softmax statistics are not counted apart); AdamW 8 bytes of moments per trainable parameter, 8-bit AdamW 2 bytes
//! plus an f32 absmax per block of 256 (tensors under 4096 values keep f32 moments).
//! A checkpoint save writes the optimizer state from its own buffers and the weights one
//! tensor copy at a time (gradients and activations are gone by then), so the peak is the
//! larger of the step and that copy. A runtime overhead (50 MB) and 5% allocator slack on
//! the tensors are added.
//!
//! Calibration (`tests/memory_guard.rs`, `#[ignore]`d; `styleforge bench` peaks): the toy
//! base model at 128 px, batch 2, UNet + text encoder: the forward pass held 1.198 GB of
//! live heap (estimate 1.194), the backward peak 1.370 GB (estimate 1.342), `styleforge
//! train`'s peak RSS 1.66 GB (estimate 1.63); `sd15-half-train-b1` peak RSS 3852 MiB =
//! 4.04 GB (estimate 4.09). With checkpointing the toy step's backward peaks at 0.569 GB of
//! live heap (estimate 0.520). The SD-1.5 StyleForge step at 512 px (`--workloads memory`,
//! no VAE, no saves): plain 23.00 GB measured / 22.21 estimated, checkpointing 17.63 /
//! 17.72, checkpointing + 8-bit AdamW 12.66 / 11.57 — within about 10%.

use std::fmt;
use std::path::Path;

use candle_core::Device;
use styleforge_models::clip_text::ClipTextConfig;
use styleforge_models::config::read_config;
use styleforge_models::unet::{DownBlockType, UNetConfig, UpBlockType};
use styleforge_models::vae::VaeConfig;

use super::config::{Method, ResolvedConfig};
use super::precision::Precision;
use crate::error::{Error, Result};
use params::{text_encoder_params, unet_params, unet_shape, up_resnets, vae_params, Param, Role};

/// Bytes of one f32.
const F32: u64 = 4;
/// Runtime overhead outside tensors: the binary, thread stacks, tokenizer, caches.
pub const RUNTIME_OVERHEAD_BYTES: u64 = 50_000_000;
/// What the allocator holds beyond the live tensors, as a fraction of them (measured:
/// peak RSS / live heap bytes 1.04–1.08 on the calibration runs).
pub const ALLOCATOR_SLACK: f64 = 0.05;
/// Prompt length of SD's text encoder.
const TOKENS: u64 = 77;
/// 8-bit AdamW: values per block with one f32 absmax, and the size under which a tensor
/// keeps f32 moments.
const BLOCK_8BIT: u64 = crate::optim::adamw8bit::BLOCKSIZE as u64;
const MIN_8BIT: u64 = crate::optim::adamw8bit::MIN_8BIT_SIZE as u64;

/// Bytes of one value a model computes with in `precision`.
fn precision_bytes(precision: Precision) -> u64 {
    match precision {
        Precision::Fp32 => F32,
        Precision::Bf16 | Precision::Fp16 => 2,
    }
}

/// Gigabytes (10⁹ bytes) as the reports print them.
pub fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// The optimizer (`optim.optimizer`), for its state size: AdamW keeps 8 bytes per
/// trainable parameter, 8-bit AdamW 2 plus an f32 absmax per block of 256.
pub use crate::optim::OptimizerKind;

/// How attention keeps its intermediates for backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMemory {
    /// The fused CPU kernel: only q, k, v and the output (probabilities recomputed).
    Fused,
    /// Plain tensor ops (off the CPU): scores, exp and probabilities are kept.
    Materialized,
}

impl AttentionMemory {
    /// What the models use on `device`.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            Self::Fused
        } else {
            Self::Materialized
        }
    }
}

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trained {
    /// Full fine-tuning (StyleForge, DreamBooth): the UNet, and the text encoder or not.
    Full {
        /// The text encoder is trained too.
        text_encoder: bool,
    },
    /// LoRA of the given rank on the attention projections (and the text encoder's).
    Lora {
        /// Rank.
        rank: usize,
        /// The text encoder's projections too.
        text_encoder: bool,
    },
    /// Textual Inversion: `vectors` new token embeddings.
    TextualInversion {
        /// New embedding rows.
        vectors: usize,
    },
    /// Custom Diffusion: the cross-attention K/V projections and `tokens` embeddings.
    CustomDiffusion {
        /// Modifier tokens.
        tokens: usize,
    },
}

impl Trained {
    /// Whether gradients flow through the text encoder.
    pub fn text_encoder_in_graph(self) -> bool {
        match self {
            Trained::Full { text_encoder } | Trained::Lora { text_encoder, .. } => text_encoder,
            Trained::TextualInversion { .. } | Trained::CustomDiffusion { .. } => true,
        }
    }

    /// The same, with the text encoder's training switched off where that is a choice.
    fn without_text_encoder(self) -> Self {
        match self {
            Trained::Full { .. } => Trained::Full {
                text_encoder: false,
            },
            Trained::Lora { rank, .. } => Trained::Lora {
                rank,
                text_encoder: false,
            },
            other => other,
        }
    }
}

/// The three model configs of a diffusers folder.
#[derive(Debug, Clone)]
pub struct ModelConfigs {
    /// `unet/config.json`.
    pub unet: UNetConfig,
    /// `text_encoder/config.json`.
    pub text_encoder: ClipTextConfig,
    /// `vae/config.json`.
    pub vae: VaeConfig,
}

impl ModelConfigs {
    /// Reads the configs of a diffusers folder (no weights are read).
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(Self {
            unet: read_config(&dir.join("unet/config.json"))?,
            text_encoder: read_config(&dir.join("text_encoder/config.json"))?,
            vae: read_config(&dir.join("vae/config.json"))?,
        })
    }

    /// How many times the VAE shrinks an image side.
    pub fn vae_scale_factor(&self) -> u32 {
        1 << self.vae.block_out_channels.len().saturating_sub(1)
    }
}

/// The settings of a run that change its memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemorySettings {
    /// Rows per micro-batch (`batch_size` StyleRef rows, as many Aux rows with prior
    /// preservation).
    pub batch: usize,
    /// Image side in pixels.
    pub resolution: u32,
    /// What is trained.
    pub trained: Trained,
    /// Gradient checkpointing of the UNet (and the trained text encoder).
    pub gradient_checkpointing: bool,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Micro-batches per step (more than one holds a second set of gradients).
    pub gradient_accumulation: usize,
    /// How attention keeps its intermediates.
    pub attention: AttentionMemory,
    /// Whether the run saves checkpoints (a save copies one weight tensor at a time).
    pub checkpoint_saves: bool,
    /// Whether the run keeps a moving average of the trained weights (an f32 copy).
    pub ema: bool,
    /// The dtype forward and backward run in.
    pub precision: Precision,
}

impl MemorySettings {
    /// The settings of a resolved training config on `device`.
    pub fn from_config(cfg: &ResolvedConfig, device: &Device) -> Self {
        let trained = match cfg.method {
            Method::Lora => Trained::Lora {
                rank: cfg.adapter.lora_rank,
                text_encoder: cfg.train_text_encoder,
            },
            Method::TextualInversion => Trained::TextualInversion {
                vectors: cfg.adapter.num_vectors.max(1),
            },
            Method::CustomDiffusion => Trained::CustomDiffusion {
                tokens: cfg.concepts.len(),
            },
            _ => Trained::Full {
                text_encoder: cfg.train_text_encoder,
            },
        };
        Self {
            batch: cfg.batch_size * (1 + usize::from(cfg.prior_loss_weight > 0.0)),
            resolution: cfg.resolution,
            trained,
            gradient_checkpointing: cfg.gradient_checkpointing,
            optimizer: cfg.adamw.optimizer,
            gradient_accumulation: cfg.gradient_accumulation,
            attention: AttentionMemory::for_device(device),
            checkpoint_saves: cfg.checkpoint_every > 0 && cfg.checkpoint_every < cfg.steps,
            ema: cfg.ema.is_some(),
            precision: cfg.precision,
        }
    }
}

/// An estimate of a run's peak memory, by part, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable parameters (f32).
    pub trainable_params: u64,
    /// Frozen parameters (UNet/text encoder not trained, VAE, adapter bases).
    pub frozen_params: u64,
    /// Trainable weights, f32.
    pub trainable_weights: u64,
    /// Frozen weights (f32: the engine up-casts), with the adapters' merged copies.
    pub frozen_weights: u64,
    /// Gradients, f32 per trainable parameter.
    pub gradients: u64,
    /// Optimizer moments.
    pub optimizer_states: u64,
    /// The moving average of the trainable weights (f32; 0 without EMA).
    pub ema_weights: u64,
    /// Forward activations held for backward (UNet and, when trained, text encoder).
    pub activations: u64,
    /// Transient gradients during backward (skip connections, largest tensors).
    pub backward_workspace: u64,
    /// The weight copy made while a checkpoint is written (0 without checkpoints).
    pub checkpoint_save: u64,
    /// Runtime overhead and allocator slack.
    pub overhead: u64,
    /// The peak: weights, states and overhead, plus the larger of the step (gradients,
    /// activations, workspace) and the checkpoint save.
    pub total: u64,
}

impl MemoryEstimate {
    /// The step's part (gradients, activations and workspace).
    pub fn step_part(&self) -> u64 {
        self.gradients + self.activations + self.backward_workspace
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            (
                format!(
                    "trainable weights ({} params)",
                    millions(self.trainable_params)
                ),
                self.trainable_weights,
            ),
            (
                format!("frozen weights ({} params)", millions(self.frozen_params)),
                self.frozen_weights,
            ),
            ("gradients".to_string(), self.gradients),
            ("optimizer states".to_string(), self.optimizer_states),
            ("activations".to_string(), self.activations),
            ("backward workspace".to_string(), self.backward_workspace),
            (
                "checkpoint save (not with the step)".to_string(),
                self.checkpoint_save,
            ),
            ("runtime + allocator overhead".to_string(), self.overhead),
        ];
        // The EMA row only for runs that keep one, after the optimizer states.
        let ema = (self.ema_weights > 0).then(|| ("EMA weights".to_string(), self.ema_weights));
        let (before, after) = rows.split_at(4);
        for (label, bytes) in before.iter().chain(&ema).chain(after) {
            writeln!(f, "  {label:<38} {:>7.2} GB", gb(*bytes))?;
        }
        write!(f, "  {:<38} {:>7.2} GB", "estimated peak", gb(self.total))
    }
}

/// `983M`, `6.7M`, `0.14M`.
fn millions(n: u64) -> String {
    let m = n as f64 / 1e6;
    if m >= 100.0 {
        format!("{m:.0}M")
    } else if m >= 10.0 {
        format!("{m:.1}M")
    } else {
        format!("{m:.2}M")
    }
}

/// Parameter counts of the three models: (UNet, text encoder, VAE).
pub fn parameter_counts(models: &ModelConfigs) -> Result<(u64, u64, u64)> {
    let sum = |v: &[Param]| v.iter().map(|p| p.elems).sum::<u64>();
    Ok((
        sum(&unet_params(&models.unet)?),
        sum(&text_encoder_params(&models.text_encoder)),
        sum(&vae_params(&models.vae)),
    ))
}

/// Activations of one piece of the forward pass, in values per batch row.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    /// Every tensor the piece keeps for backward.
    kept: u64,
    /// Its output (all a checkpointed piece keeps).
    output: u64,
    /// The largest single tensor inside.
    largest: u64,
    /// Run through gradient checkpointing when it is on.
    checkpointed: bool,
}

fn plain(kept: u64) -> Segment {
    Segment {
        kept,
        output: kept,
        largest: kept,
        checkpointed: false,
    }
}

fn resnet_acts(cin: usize, cout: usize, n: usize) -> Segment {
    let (cin, cout, n) = (cin as u64, cout as u64, n as u64);
    let shortcut = u64::from(cin != cout);
    Segment {
        kept: (cin + (5 + shortcut) * cout) * n,
        output: cout * n,
        largest: cin.max(cout) * n,
        checkpointed: true,
    }
}

/// Per-block extras of attention computed with plain ops: split/merge copies and, per
/// attention, scores, scaled scores, shifted, exp and probabilities.
fn materialized_attention(c: u64, n: u64, m: u64, heads: u64) -> (u64, u64) {
    let self_attn = 4 * c * n + 5 * heads * n * n;
    let cross = 2 * c * n + 2 * m * c + 5 * heads * n * m;
    (self_attn + cross, heads * n * n.max(m))
}

fn transformer_acts(
    c: usize,
    n: usize,
    layers: usize,
    heads: usize,
    linear_projection: bool,
    attention: AttentionMemory,
) -> Segment {
    let (c, n, layers, heads) = (c as u64, n as u64, layers as u64, heads as u64);
    let around = if linear_projection { 7 } else { 6 };
    let mut kept = (around + 38 * layers) * c * n + layers * 2 * TOKENS * c;
    let mut largest = 8 * c * n;
    if attention == AttentionMemory::Materialized {
        let (extra, scores) = materialized_attention(c, n, TOKENS, heads);
        kept += layers * extra;
        largest = largest.max(scores);
    }
    Segment {
        kept,
        output: c * n,
        largest,
        checkpointed: true,
    }
}

/// The UNet's forward pass as segments, and the values of its skip connections (per
/// batch row), for a `side × side` latent.
fn unet_segments(
    cfg: &UNetConfig,
    side: usize,
    attention: AttentionMemory,
) -> Result<(Vec<Segment>, u64)> {
    let s = unet_shape(cfg)?;
    let nb = s.ch.len();
    // Each downsampling (3×3, stride 2, padding 1) rounds up.
    let sides: Vec<usize> = (0..nb)
        .scan(side, |acc, i| {
            let here = *acc;
            if i + 1 < nb {
                *acc = here.div_ceil(2);
            }
            Some(here)
        })
        .collect();
    let area = |i: usize| sides[i] * sides[i];
    let temb = cfg.time_embed_dim() as u64;
    let lin = cfg.use_linear_projection;
    let mut segs = vec![
        plain(6 * temb),
        plain((s.ch[0] * area(0)) as u64), // conv_in
    ];
    let mut skips = (s.ch[0] * area(0)) as u64;
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let cin = if i == 0 { s.ch[0] } else { s.ch[i - 1] };
        for j in 0..s.layers[i] {
            segs.push(resnet_acts(
                if j == 0 { cin } else { s.ch[i] },
                s.ch[i],
                area(i),
            ));
            if *kind == DownBlockType::CrossAttnDownBlock2D {
                segs.push(transformer_acts(
                    s.ch[i],
                    area(i),
                    s.t_layers[i],
                    s.heads[i],
                    lin,
                    attention,
                ));
            }
            skips += (s.ch[i] * area(i)) as u64;
        }
        if i + 1 < nb {
            let down = (s.ch[i] * area(i + 1)) as u64;
            segs.push(plain(down));
            skips += down;
        }
    }
    let (c, a) = (s.ch[nb - 1], area(nb - 1));
    segs.push(resnet_acts(c, c, a));
    segs.push(transformer_acts(
        c,
        a,
        s.t_layers[nb - 1],
        s.heads[nb - 1],
        lin,
        attention,
    ));
    segs.push(resnet_acts(c, c, a));
    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let (depth, resnets) = up_resnets(&s, i);
        for (cin, cout) in resnets {
            segs.push(plain((cin * area(depth)) as u64)); // the skip concatenation
            segs.push(resnet_acts(cin, cout, area(depth)));
            if *kind == UpBlockType::CrossAttnUpBlock2D {
                segs.push(transformer_acts(
                    cout,
                    area(depth),
                    s.t_layers[depth],
                    s.heads[depth],
                    lin,
                    attention,
                ));
            }
        }
        if i + 1 < nb {
            // Nearest 2× (a copy) and its convolution, at the next level up.
            let up = (s.ch[depth] * area(depth - 1)) as u64;
            segs.push(Segment {
                kept: 2 * up,
                output: up,
                largest: up,
                checkpointed: false,
            });
        }
    }
    let tail = (s.ch[0] * area(0)) as u64;
    let out = (cfg.out_channels * area(0)) as u64;
    segs.push(plain(tail + out + 4 * out)); // conv_norm_out, conv_out, the loss
    Ok((segs, skips))
}

/// The text encoder's forward pass as segments (per batch row).
fn text_encoder_segments(cfg: &ClipTextConfig, attention: AttentionMemory) -> Vec<Segment> {
    let (n, d, i) = (TOKENS, cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let heads = cfg.num_attention_heads as u64;
    let mut layer = Segment {
        kept: 15 * n * d + 3 * n * i,
        output: n * d,
        largest: 2 * n * i.max(d),
        checkpointed: true,
    };
    if attention == AttentionMemory::Materialized {
        layer.kept += 4 * n * d + 6 * heads * n * n;
        layer.largest = layer.largest.max(heads * n * n);
    }
    let mut segs = vec![plain(2 * n * d)];
    segs.extend(std::iter::repeat_n(layer, cfg.num_hidden_layers));
    segs.push(plain(n * d));
    segs
}

/// Activation bytes and backward workspace bytes of `segs` for `batch` rows.
fn activation_bytes(segs: &[Segment], skips: u64, batch: u64, ckpt: bool) -> (u64, u64) {
    let held: u64 = segs
        .iter()
        .map(|s| {
            if ckpt && s.checkpointed {
                s.output
            } else {
                s.kept
            }
        })
        .sum();
    let recomputed = if ckpt {
        segs.iter()
            .filter(|s| s.checkpointed)
            .map(|s| s.kept)
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    let largest = segs.iter().map(|s| s.largest).max().unwrap_or(0);
    (
        (held + recomputed) * batch * F32,
        (skips + 2 * largest) * batch * F32,
    )
}

/// Bytes of optimizer state for tensors of `sizes` values.
fn optimizer_bytes(kind: OptimizerKind, sizes: impl Iterator<Item = u64>) -> u64 {
    sizes
        .map(|n| match kind {
            OptimizerKind::AdamW => 8 * n,
            OptimizerKind::AdamW8bit if n < MIN_8BIT => 8 * n,
            OptimizerKind::AdamW8bit => 2 * n + 2 * F32 * n.div_ceil(BLOCK_8BIT),
        })
        .sum()
}

/// Estimates the peak memory of a training run.
pub fn estimate(models: &ModelConfigs, s: &MemorySettings) -> Result<MemoryEstimate> {
    let unet = unet_params(&models.unet)?;
    let te = text_encoder_params(&models.text_encoder);
    let vae: u64 = vae_params(&models.vae).iter().map(|p| p.elems).sum();
    let sum = |v: &[Param]| v.iter().map(|p| p.elems).sum::<u64>();
    let (unet_total, te_total) = (sum(&unet), sum(&te));
    let d = models.text_encoder.hidden_size as u64;

    // Trainable tensors (their sizes), frozen values, and adapter copies held as well.
    let mut trainable: Vec<u64> = Vec::new();
    let mut copies = 0u64;
    match s.trained {
        Trained::Full { text_encoder } => {
            trainable.extend(unet.iter().map(|p| p.elems));
            if text_encoder {
                trainable.extend(te.iter().map(|p| p.elems));
            }
        }
        Trained::Lora { rank, text_encoder } => {
            let r = rank.max(1) as u64;
            let targets = unet
                .iter()
                .filter(|p| matches!(p.role, Role::UnetAttention { .. }))
                .chain(
                    te.iter()
                        .filter(|p| text_encoder && p.role == Role::TextAttention),
                );
            for t in targets {
                let (i, o) = t.linear.expect("attention projections are linear");
                trainable.push(r * i);
                trainable.push(r * o);
                // B·A, its scaling and the merged weight stay in the graph.
                copies += 3 * t.elems;
            }
        }
        Trained::TextualInversion { vectors } => {
            trainable.push(vectors as u64 * d);
            copies += te_total.min(models.text_encoder.vocab_size as u64 * d);
        }
        Trained::CustomDiffusion { tokens } => {
            trainable.extend(
                unet.iter()
                    .filter(|p| p.role == (Role::UnetAttention { cross_kv: true }))
                    .map(|p| p.elems),
            );
            trainable.extend(std::iter::repeat_n(d, tokens));
            copies += models.text_encoder.vocab_size as u64 * d;
        }
    }
    let trainable_params: u64 = trainable.iter().sum();
    let full_unet = matches!(s.trained, Trained::Full { .. });
    let full_te = s.trained == Trained::Full { text_encoder: true };
    // Custom Diffusion's K/V are trainable copies; the base keeps its own.
    let frozen_params =
        vae + if full_unet { 0 } else { unet_total } + if full_te { 0 } else { te_total };

    let side = (s.resolution / models.vae_scale_factor()).max(1) as usize;
    let (unet_segs, skips) = unet_segments(&models.unet, side, s.attention)?;
    let batch = s.batch.max(1) as u64;
    let ckpt = s.gradient_checkpointing;
    let (mut activations, mut workspace) = activation_bytes(&unet_segs, skips, batch, ckpt);
    if s.trained.text_encoder_in_graph() {
        let te_segs = text_encoder_segments(&models.text_encoder, s.attention);
        let (a, w) = activation_bytes(&te_segs, 0, batch, ckpt);
        activations += a;
        workspace = workspace.max(w);
    }
    // A trained token table gets a dense gradient as large as the table.
    if matches!(
        s.trained,
        Trained::TextualInversion { .. } | Trained::CustomDiffusion { .. }
    ) {
        workspace += models.text_encoder.vocab_size as u64 * d * F32;
    }

    // Mixed precision: activations in 2 bytes, frozen weights too (the VAE stays f32), and
    // a compute copy of each fully trained weight beside its f32 master.
    let compute = precision_bytes(s.precision);
    activations = activations * compute / F32;
    workspace = workspace * compute / F32;
    let cast_copies = if full_unet && s.precision.is_mixed() {
        trainable_params * compute
    } else {
        0
    };
    let trainable_weights = trainable_params * F32 + cast_copies;
    let frozen_weights = vae * F32 + (frozen_params - vae + copies) * compute;
    let accumulation_copies = if s.gradient_accumulation > 1 { 2 } else { 1 };
    let gradients = trainable_params * F32 * accumulation_copies;
    let optimizer_states = optimizer_bytes(s.optimizer, trainable.iter().copied());
    let checkpoint_save = if s.checkpoint_saves {
        trainable.iter().copied().max().unwrap_or(0) * F32
    } else {
        0
    };
    let ema_weights = if s.ema { trainable_params * F32 } else { 0 };
    let step = gradients + activations + workspace;
    let tensors = trainable_weights
        + frozen_weights
        + optimizer_states
        + ema_weights
        + step.max(checkpoint_save);
    let overhead = RUNTIME_OVERHEAD_BYTES + (tensors as f64 * ALLOCATOR_SLACK) as u64;
    let total = tensors + overhead;
    Ok(MemoryEstimate {
        trainable_params,
        frozen_params,
        trainable_weights,
        frozen_weights,
        gradients,
        optimizer_states,
        ema_weights,
        activations,
        backward_workspace: workspace,
        checkpoint_save,
        overhead,
        total,
    })
}

mod guard;
mod host;
mod params;
#[cfg(test)]
mod tests;

pub use guard::{check, guard, suggestions, Suggestion};
pub use host::{available_memory, peak_rss_bytes, rss_bytes, MEMORY_LIMIT_ENV};
