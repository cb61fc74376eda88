//! Multi-head attention (diffusers' `Attention`) and a softmax that has a backward pass.

use crate::nn::Linear;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::kernels;

/// Softmax over the last dimension, composed from differentiable ops.
///
/// candle-nn's `softmax_last_dim` is a fused kernel without a backward pass: gradients stop
/// there silently. The max is subtracted for stability and detached (it cancels exactly).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if kernels::use_cpu_kernels(x) {
        return kernels::softmax::softmax_last_dim(x, 1.0);
    }
    softmax_last_dim_plain(x)
}

/// [`softmax_last_dim`] composed from primitive ops (used off the CPU and for half
/// precision). Half-precision scores are normalised in f32, as PyTorch's autocast does:
/// the exponentials and their sum would lose most of their digits in bf16.
pub fn softmax_last_dim_plain(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(statistics_dtype(dtype))?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)?.to_dtype(dtype)
}

/// The dtype normalisation statistics are computed in: f32 for half-precision values,
/// their own dtype otherwise (f64 stays f64).
pub fn statistics_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `softmax(q·kᵀ·scale + mask)·v` for `q` `[b, h, n, d]`, `k`/`v` `[b, h, m, d]`;
/// `mask` (additive, broadcast to `[b, h, n, m]`) is optional.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if let (Ok((b, h, n, d)), Ok(m)) = (q.dims4(), k.dim(2)) {
        super::flops::add(4 * (b * h * n * m * d) as u64);
    }
    if mask.is_none() && kernels::use_cpu_kernels(q) {
        return kernels::attention::attention(q, k, v, scale as f32);
    }
    scaled_dot_product_attention_plain(q, k, v, scale, mask)
}

/// [`scaled_dot_product_attention`] composed from primitive ops (used off the CPU and
/// with a mask).
pub fn scaled_dot_product_attention_plain(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let scores = (super::matmul(q, &k.t()?)? * scale)?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    super::matmul(&softmax_last_dim(&scores)?, v)
}

/// Splits `[b, n, heads·d]` into `[b, heads, n, d]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, inner) = x.dims3()?;
    x.reshape((b, n, heads, inner / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Merges `[b, heads, n, d]` back into `[b, n, heads·d]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, h * d))
}

/// diffusers' `Attention`: query from `x`, key and value from `context` (cross-attention) or
/// from `x` itself (self-attention), `heads` heads of `head_dim`, then `to_out.0`.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
    detach_first_context_token: bool,
}

/// `kv` `[b, m, c]` with row 0 of every batch item cut off from the gradient graph.
fn detach_first_token(kv: &Tensor) -> Result<Tensor> {
    let m = kv.dim(1)?;
    if m < 2 {
        return Ok(kv.detach());
    }
    Tensor::cat(&[kv.narrow(1, 0, 1)?.detach(), kv.narrow(1, 1, m - 1)?], 1)
}

impl Attention {
    /// Loads `to_q`, `to_k`, `to_v` (with biases when `qkv_bias`) and `to_out.0`.
    pub fn new(
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let context_dim = context_dim.unwrap_or(query_dim);
        let proj = |i, o, name| {
            if qkv_bias {
                crate::nn::linear(i, o, vb.pp(name))
            } else {
                crate::nn::linear_no_bias(i, o, vb.pp(name))
            }
        };
        Ok(Self {
            to_q: proj(query_dim, inner, "to_q")?,
            to_k: proj(context_dim, inner, "to_k")?,
            to_v: proj(context_dim, inner, "to_v")?,
            to_out: crate::nn::linear(inner, query_dim, vb.pp("to_out").pp("0"))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
            detach_first_context_token: false,
        })
    }

    /// Custom Diffusion's training rule (diffusers' `CustomDiffusionAttnProcessor`): the
    /// key and value of the context's first token (the prompt's BOS) pass no gradient back.
    /// Values are unchanged; only cross-attention (a `context` given) is affected.
    pub fn set_detach_first_context_token(&mut self, on: bool) {
        self.detach_first_context_token = on;
    }

    fn key_value(&self, context: &Tensor, cross: bool) -> Result<(Tensor, Tensor)> {
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        if cross && self.detach_first_context_token {
            return Ok((detach_first_token(&k)?, detach_first_token(&v)?));
        }
        Ok((k, v))
    }

    /// `x` `[b, n, query_dim]`, `context` `[b, m, context_dim]` → `[b, n, query_dim]`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let cross = context.is_some();
        let context = context.unwrap_or(x);
        let (k, v) = self.key_value(context, cross)?;
        if kernels::use_cpu_kernels(x) {
            // Heads read and written in place: no split/merge transposes.
            let q = self.to_q.forward(x)?;
            let out = kernels::attention::attention_heads(
                &q,
                &k,
                &v,
                self.heads,
                self.scale as f32,
                false,
            )?;
            return self.to_out.forward(&out);
        }
        let q = split_heads(&self.to_q.forward(x)?, self.heads)?;
        let k = split_heads(&k, self.heads)?;
        let v = split_heads(&v, self.heads)?;
        let out = scaled_dot_product_attention(&q, &k, &v, self.scale, None)?;
        self.to_out.forward(&merge_heads(&out)?)
    }
}
