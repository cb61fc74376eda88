//! AdamW (decoupled weight decay, Loshchilov & Hutter 2019) updating parameters in place.
//!
//! candle-nn's `AdamW` builds about fourteen temporary tensors per parameter per step
//! (3.2 s a step at 220M parameters on this CPU); this one reads each gradient once and
//! writes parameter and moments in a single pass over memory. It follows PyTorch's
//! `torch.optim.AdamW` update exactly, so fine-tuning runs compare with diffusers' scripts.
//!
//! With [`OptimizerKind::AdamW8bit`] it is bitsandbytes' `AdamW8bit` instead (what
//! diffusers' scripts run with `--use_8bit_adam`): block-wise 8-bit moments for tensors of
//! at least [`AdamWConfig::min_8bit_size`] elements, about 2 bytes of state per parameter
//! instead of 8 (see [`super::adamw8bit`]).

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, Var};

use super::adamw8bit::{self, Blockwise8, BnbStep};

/// Where saved tensors come from: a map in memory, or a checkpoint file read one tensor
/// at a time (`training::checkpoint::TensorFile`).
pub trait StateSource {
    /// The tensor saved as `name`, if there is one.
    fn tensor(&self, name: &str) -> Result<Option<Tensor>>;
    /// Whether `name` was saved, without reading it.
    fn contains(&self, name: &str) -> bool;
}

impl StateSource for HashMap<String, Tensor> {
    fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        Ok(self.get(name).cloned())
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// Which AdamW keeps the moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum OptimizerKind {
    /// PyTorch's `torch.optim.AdamW`: f32 moments, 8 bytes of state per parameter.
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
    /// bitsandbytes' `AdamW8bit`: block-wise 8-bit moments (2 bytes per parameter, plus an
    /// f32 per 256) for tensors of at least `min_8bit_size` elements; smaller tensors keep f32
    /// moments and bitsandbytes' 32-bit update.
    #[serde(rename = "adamw8bit")]
    AdamW8bit,
}

impl OptimizerKind {
    /// The config spelling (`adamw`, `adamw8bit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdamW => "adamw",
            Self::AdamW8bit => "adamw8bit",
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AdamW's hyper-parameters (PyTorch's names and defaults but for the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Decoupled weight decay (multiplies the parameter by `1 - lr·wd` each step).
    pub weight_decay: f64,
    /// `adamw` (default) or `adamw8bit`.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// With `adamw8bit`, tensors with fewer elements keep f32 moments (bitsandbytes' 4096).
    #[serde(default = "default_min_8bit_size")]
    pub min_8bit_size: usize,
}

fn default_min_8bit_size() -> usize {
    adamw8bit::MIN_8BIT_SIZE
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            optimizer: OptimizerKind::AdamW,
            min_8bit_size: default_min_8bit_size(),
        }
    }
}

/// One parameter's moments, kept on the host.
enum Moments {
    /// f32 `exp_avg`, `exp_avg_sq`.
    F32 { m: Vec<f32>, v: Vec<f32> },
    /// bitsandbytes' block-wise 8-bit `state1`, `state2` with their block absmax.
    Blockwise8(Blockwise8),
}

/// One parameter with its moments.
struct Slot {
    name: String,
    var: Var,
    moments: Moments,
}

/// In-place AdamW over named variables.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// An optimizer over `vars` (name → variable); names key the saved state.
    pub fn new(vars: impl IntoIterator<Item = (String, Var)>, config: AdamWConfig) -> Result<Self> {
        let mut slots: Vec<Slot> = vars
            .into_iter()
            .map(|(name, var)| {
                let n = var.elem_count();
                let moments =
                    if config.optimizer == OptimizerKind::AdamW8bit && n >= config.min_8bit_size {
                        Moments::Blockwise8(Blockwise8::zeros(n))
                    } else {
                        Moments::F32 {
                            m: vec![0.0; n],
                            v: vec![0.0; n],
                        }
                    };
                Slot { name, var, moments }
            })
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        for slot in &slots {
            if slot.var.dtype() != DType::F32 {
                candle_core::bail!(
                    "AdamW: `{}` is {:?}; trainable parameters must be f32",
                    slot.name,
                    slot.var.dtype()
                );
            }
        }
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules and warm-up).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Number of parameters (scalars) optimized.
    pub fn num_parameters(&self) -> usize {
        self.slots.iter().map(|s| s.var.elem_count()).sum()
    }

    /// Bytes of optimizer state held (moments, codes and block absmax).
    pub fn state_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match &s.moments {
                Moments::F32 { m, v } => 4 * (m.len() + v.len()),
                Moments::Blockwise8(q) => {
                    q.state1.len() + q.state2.len() + 4 * (q.absmax1.len() + q.absmax2.len())
                }
            })
            .sum()
    }

    /// Applies one update from `grads`. Parameters without a gradient are left untouched
    /// (their moments too), as PyTorch does for parameters whose `.grad` is `None`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let coeffs = Coefficients {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            step_size: (c.lr / (1.0 - c.beta1.powi(t))) as f32,
            bias_correction2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
        };
        let bnb = BnbStep::new(&c, self.step);
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let grad = grad.to_dtype(DType::F32)?.contiguous()?;
            match (&mut slot.moments, c.optimizer) {
                (Moments::F32 { m, v }, OptimizerKind::AdamW) => {
                    if slot.var.device().is_cpu() {
                        update_in_place(&slot.var, &grad, "adamw-update", |p, g| {
                            torch_update(p, g, m, v, coeffs)
                        })?;
                    } else {
                        update_with_tensor_ops(&slot.var, m, v, &grad, coeffs)?;
                    }
                }
                (Moments::F32 { m, v }, OptimizerKind::AdamW8bit) => {
                    update_in_place(&slot.var, &grad, "adamw8bit-32bit-update", |p, g| {
                        adamw8bit::update_32bit(p, g, m, v, &bnb)
                    })?;
                }
                (Moments::Blockwise8(q), _) => {
                    update_in_place(&slot.var, &grad, "adamw8bit-update", |p, g| {
                        adamw8bit::update_8bit(p, g, q, &bnb)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The optimizer state as tensors: `step`, and per parameter `<name>.exp_avg`,
    /// `<name>.exp_avg_sq` (f32 moments) or, for 8-bit moments, `<name>.state1`,
    /// `<name>.state2` (u8 codes, the parameter's shape) and `<name>.absmax1`,
    /// `<name>.absmax2` (f32, one per block of 256). Checkpoints use [`Self::save_state`],
    /// which writes the same tensors without this copy.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let step = [self.step as f64];
        let dev = candle_core::Device::Cpu;
        self.views(&step)
            .into_iter()
            .map(|(name, v)| {
                let t = Tensor::from_raw_buffer(v.bytes, v.dtype, &v.shape, &dev)?;
                Ok((name, t))
            })
            .collect()
    }

    /// Writes [`Self::state`] to a safetensors file straight from the optimizer's buffers,
    /// without the copy `state` makes (for SD-1.5 with f32 AdamW that copy is 7.9 GB, held
    /// while a checkpoint is written), atomically. Read back with [`Self::load_state`].
    pub fn save_state(&self, path: &std::path::Path) -> crate::Result<()> {
        let step = [self.step as f64];
        styleforge_models::files::write_with(path, |tmp| {
            safetensors::tensor::serialize_to_file(self.views(&step), None, tmp).map_err(|e| {
                crate::Error::Data {
                    path: path.to_path_buf(),
                    message: format!("cannot write the optimizer state: {e}"),
                }
            })
        })
    }

    /// The state's tensors as views of the optimizer's buffers (`step` given by the caller,
    /// who keeps it alive): the one place that names and shapes them.
    fn views<'a>(&'a self, step: &'a [f64; 1]) -> Vec<(String, StateView<'a>)> {
        let mut views = Vec::with_capacity(4 * self.slots.len() + 1);
        let view = |dtype, shape: &[usize], bytes| StateView {
            dtype,
            shape: shape.to_vec(),
            bytes,
        };
        for slot in &self.slots {
            let shape = slot.var.dims();
            let name = &slot.name;
            match &slot.moments {
                Moments::F32 { m, v } => {
                    views.push((
                        format!("{name}.exp_avg"),
                        view(DType::F32, shape, bytes_of(m)),
                    ));
                    views.push((
                        format!("{name}.exp_avg_sq"),
                        view(DType::F32, shape, bytes_of(v)),
                    ));
                }
                Moments::Blockwise8(q) => {
                    let blocks = [q.absmax1.len()];
                    views.push((format!("{name}.state1"), view(DType::U8, shape, &q.state1)));
                    views.push((format!("{name}.state2"), view(DType::U8, shape, &q.state2)));
                    views.push((
                        format!("{name}.absmax1"),
                        view(DType::F32, &blocks, bytes_of(&q.absmax1)),
                    ));
                    views.push((
                        format!("{name}.absmax2"),
                        view(DType::F32, &blocks, bytes_of(&q.absmax2)),
                    ));
                }
            }
        }
        views.push(("step".to_string(), view(DType::F64, &[1], bytes_of(step))));
        views
    }

    /// Restores a state written by [`Self::state`]; every parameter must be present with
    /// its shape, and with moments of the kind this optimizer keeps for it (8-bit moments
    /// cannot resume an `adamw` run, nor f32 ones the 8-bit moments of an `adamw8bit` run).
    /// Nothing changes unless the whole state loads.
    pub fn load_state(&mut self, state: &impl StateSource) -> Result<()> {
        let step = state
            .tensor("step")?
            .ok_or_else(|| candle_core::Error::msg("optimizer state has no `step`"))?;
        let step = step.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let kind = self.config.optimizer;
        let mut loaded = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let n = slot.var.elem_count();
            let name = &slot.name;
            let moments = match &slot.moments {
                Moments::F32 { .. } => {
                    let key = format!("{name}.exp_avg");
                    if !state.contains(&key) && state.contains(&format!("{name}.state1")) {
                        candle_core::bail!(
                            "optimizer state `{name}.state1` holds 8-bit moments (saved by an \
                             `adamw8bit` run), but this `{kind}` run keeps 32-bit moments for \
                             `{name}` and expects `{key}`: resume with `[optim] optimizer = \
                             \"adamw8bit\"` (and the same min_8bit_size), or start afresh \
                             without --resume"
                        );
                    }
                    Moments::F32 {
                        m: f32_values(state, &key, n)?,
                        v: f32_values(state, &format!("{name}.exp_avg_sq"), n)?,
                    }
                }
                Moments::Blockwise8(_) => {
                    let key = format!("{name}.state1");
                    if !state.contains(&key) && state.contains(&format!("{name}.exp_avg")) {
                        candle_core::bail!(
                            "optimizer state `{name}.exp_avg` holds 32-bit moments (saved by an \
                             `adamw` run, or an `adamw8bit` run with a larger min_8bit_size), \
                             but this `adamw8bit` run keeps 8-bit moments for `{name}` and \
                             expects `{key}`: resume with `[optim] optimizer = \"adamw\"`, or \
                             start afresh without --resume"
                        );
                    }
                    let blocks = Blockwise8::blocks(n);
                    Moments::Blockwise8(Blockwise8 {
                        state1: u8_values(state, &key, n)?,
                        state2: u8_values(state, &format!("{name}.state2"), n)?,
                        absmax1: f32_values(state, &format!("{name}.absmax1"), blocks)?,
                        absmax2: f32_values(state, &format!("{name}.absmax2"), blocks)?,
                    })
                }
            };
            loaded.push(moments);
        }
        for (slot, moments) in self.slots.iter_mut().zip(loaded) {
            slot.moments = moments;
        }
        self.step = step.first().copied().unwrap_or(0.0) as u64;
        Ok(())
    }
}

/// The tensor `key` of `state`, with `len` values.
fn state_tensor(state: &impl StateSource, key: &str, len: usize) -> Result<Tensor> {
    let t = state
        .tensor(key)?
        .ok_or_else(|| candle_core::Error::msg(format!("optimizer state has no `{key}`")))?;
    if t.elem_count() != len {
        candle_core::bail!(
            "optimizer state `{key}` has {} values, expected {len}",
            t.elem_count()
        );
    }
    Ok(t)
}

fn f32_values(state: &impl StateSource, key: &str, len: usize) -> Result<Vec<f32>> {
    let t = state_tensor(state, key, len)?;
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

fn u8_values(state: &impl StateSource, key: &str, len: usize) -> Result<Vec<u8>> {
    let t = state_tensor(state, key, len)?;
    if t.dtype() != DType::U8 {
        candle_core::bail!(
            "optimizer state `{key}` is {:?}; 8-bit moments are u8 codes",
            t.dtype()
        );
    }
    t.flatten_all()?.to_vec1::<u8>()
}

/// Runs `kernel(param, grad)` on `var`'s values in place: directly on CPU storage, on a host
/// copy for other devices (8-bit moments live on the host either way).
fn update_in_place(
    var: &Var,
    grad: &Tensor,
    name: &'static str,
    kernel: impl FnMut(&mut [f32], &[f32]),
) -> Result<()> {
    if grad.elem_count() != var.elem_count() {
        candle_core::bail!(
            "{name}: gradient of {} values for a parameter of {}",
            grad.elem_count(),
            var.elem_count()
        );
    }
    if var.device().is_cpu() {
        let op = HostKernel {
            name,
            kernel: RefCell::new(kernel),
        };
        var.as_tensor().inplace_op2(grad, &op)
    } else {
        let mut param = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let grad = grad.flatten_all()?.to_vec1::<f32>()?;
        let mut kernel = kernel;
        kernel(&mut param, &grad);
        var.set(&Tensor::from_vec(param, var.shape().clone(), var.device())?)
    }
}

/// A host kernel as candle's in-place op (the storage is only reachable through one).
struct HostKernel<F> {
    name: &'static str,
    kernel: RefCell<F>,
}

impl<F: FnMut(&mut [f32], &[f32])> candle_core::InplaceOp2 for HostKernel<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        grad_s: &CpuStorage,
        grad_l: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (dst, grad_s) else {
            candle_core::bail!("{}: f32 parameters and gradients only", self.name);
        };
        let (Some((p0, p1)), Some((g0, g1))) =
            (dst_l.contiguous_offsets(), grad_l.contiguous_offsets())
        else {
            candle_core::bail!("{}: parameters and gradients must be contiguous", self.name);
        };
        let mut kernel = self.kernel.borrow_mut();
        (*kernel)(&mut param[p0..p1], &grad[g0..g1]);
        Ok(())
    }
}

/// One saved tensor, borrowed from the optimizer's buffers.
struct StateView<'a> {
    dtype: DType,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

impl safetensors::View for StateView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            DType::U8 => safetensors::Dtype::U8,
            DType::F64 => safetensors::Dtype::F64,
            DType::F32 => safetensors::Dtype::F32,
            other => unreachable!("optimizer states are u8, f32 or f64, not {other:?}"),
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes)
    }

    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

// safetensors stores little-endian values: the buffers are written as they lie in memory.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "optimizer states are saved from memory as little-endian"
);

/// The bytes of plain numbers (`f32`, `f64`) as they lie in memory.
fn bytes_of<T: Copy + Into<f64>>(values: &[T]) -> &[u8] {
    // SAFETY: `T` is a plain float (the `Into<f64>` bound admits f32 and f64 here), with no
    // padding and no invalid bit patterns; u8 has alignment 1 and the length is in bytes.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

#[derive(Debug, Clone, Copy)]
struct Coefficients {
    beta1: f32,
    beta2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
}

/// PyTorch's update, fused: one pass over parameter, gradient and both moments.
fn torch_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: Coefficients) {
    let update = |param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]| {
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *p *= c.decay;
            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
            *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
            let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
            *p -= c.step_size * *m / denom;
        }
    };
    // Element-wise, so splitting across threads changes no result; small tensors
    // (biases, norms) are not worth a thread hand-off.
    const CHUNK: usize = 1 << 15;
    if param.len() < 2 * CHUNK {
        update(param, grad, m, v);
    } else {
        use rayon::prelude::*;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| update(p, g, m, v));
    }
}

/// The same update with tensor ops, for devices without the in-place kernel (CUDA).
fn update_with_tensor_ops(
    var: &Var,
    m: &mut Vec<f32>,
    v: &mut Vec<f32>,
    grad: &Tensor,
    c: Coefficients,
) -> Result<()> {
    let dev = var.device().clone();
    let shape = var.shape().clone();
    let m_t = Tensor::from_slice(m, shape.clone(), &dev)?;
    let v_t = Tensor::from_slice(v, shape.clone(), &dev)?;
    let m_t = ((m_t * c.beta1 as f64)? + (grad * (1.0 - c.beta1 as f64))?)?;
    let v_t = ((v_t * c.beta2 as f64)? + (grad.sqr()? * (1.0 - c.beta2 as f64))?)?;
    let denom = ((v_t.sqrt()? / c.bias_correction2_sqrt as f64)? + c.eps as f64)?;
    let p = (var.as_tensor() * c.decay as f64)?;
    let p = (p - ((m_t.clone() / denom)? * c.step_size as f64)?)?;
    var.set(&p)?;
    *m = m_t.flatten_all()?.to_vec1()?;
    *v = v_t.flatten_all()?.to_vec1()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// PyTorch's `torch.optim.AdamW` update, written out in f64 for one scalar.
    fn reference(p0: f64, grads: &[f64], c: AdamWConfig) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            p *= 1.0 - c.lr * c.weight_decay;
            m = c.beta1 * m + (1.0 - c.beta1) * g;
            v = c.beta2 * v + (1.0 - c.beta2) * g * g;
            let denom = v.sqrt() / (1.0 - c.beta2.powi(t)).sqrt() + c.eps;
            p -= c.lr / (1.0 - c.beta1.powi(t)) * m / denom;
        }
        p
    }

    #[test]
    fn in_place_update_follows_pytorch_adamw() -> Result<()> {
        let config = AdamWConfig {
            lr: 0.1,
            ..Default::default()
        };
        let var = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu)?;
        let mut opt = AdamW::new([("w".to_string(), var.clone())], config)?;
        let per_step = [[0.5f32, -1.0, 0.0], [0.25, 3.0, -0.5], [-0.1, 0.2, 0.3]];
        for g in per_step {
            // d/dw sum(w * g) = g: the gradient is exactly `g`.
            let loss = (var.as_tensor() * Tensor::new(&g, &Device::Cpu)?)?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let got = var.as_tensor().to_vec1::<f32>()?;
        for (i, p0) in [1.0f64, -2.0, 0.5].iter().enumerate() {
            let grads: Vec<f64> = per_step.iter().map(|g| g[i] as f64).collect();
            let want = reference(*p0, &grads, config);
            // f32 arithmetic, as PyTorch does it, against an f64 reference.
            assert!(
                (got[i] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "{i}: {} vs {want}",
                got[i]
            );
        }
        assert_eq!(opt.step_count(), 3);
        Ok(())
    }

    #[test]
    fn threaded_update_of_a_large_tensor_equals_one_thread() -> Result<()> {
        // Above two chunks the update runs on rayon's threads; element-wise, it must give
        // the same bits as two small tensors updated on one thread each.
        let n = 3 * (1 << 15) + 17;
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let grad: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let config = AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let big = Var::from_slice(&init, n, &dev)?;
        let half = n / 2;
        let lo = Var::from_slice(&init[..half], half, &dev)?;
        let hi = Var::from_slice(&init[half..], n - half, &dev)?;
        let mut one = AdamW::new([("big".to_string(), big.clone())], config)?;
        let mut two = AdamW::new(
            [
                ("lo".to_string(), lo.clone()),
                ("hi".to_string(), hi.clone()),
            ],
            config,
        )?;
        for _ in 0..3 {
            let g = Tensor::from_slice(&grad, n, &dev)?;
            one.step(&(big.as_tensor() * &g)?.sum_all()?.backward()?)?;
            let loss = ((lo.as_tensor() * g.narrow(0, 0, half)?)?.sum_all()?
                + (hi.as_tensor() * g.narrow(0, half, n - half)?)?.sum_all()?)?;
            two.step(&loss.backward()?)?;
        }
        let joined = Tensor::cat(&[lo.as_tensor(), hi.as_tensor()], 0)?;
        assert_eq!(big.as_tensor().to_vec1::<f32>()?, joined.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn in_place_and_tensor_op_paths_agree() -> Result<()> {
        let config = AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let init: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let grad: Vec<f32> = (0..64).map(|i| (i as f32 * 0.11).cos()).collect();
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::from_slice(&init, (8, 8), &dev)?)?;
        let mut opt = AdamW::new([("a".to_string(), a.clone())], config)?;
        let g = Tensor::from_slice(&grad, (8, 8), &dev)?;
        let loss = (a.as_tensor() * &g)?.sum_all()?;
        opt.step(&loss.backward()?)?;

        let b = Var::from_tensor(&Tensor::from_slice(&init, (8, 8), &dev)?)?;
        let (mut m, mut v) = (vec![0.0; 64], vec![0.0; 64]);
        let c = config;
        let coeffs = Coefficients {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            step_size: (c.lr / (1.0 - c.beta1)) as f32,
            bias_correction2_sqrt: (1.0 - c.beta2).sqrt() as f32,
        };
        update_with_tensor_ops(&b, &mut m, &mut v, &g, coeffs)?;
        let diff = (a.as_tensor() - b.as_tensor())?
            .abs()?
            .flatten_all()?
            .max(0)?;
        assert!(diff.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }

    #[test]
    fn state_round_trips_and_resumes_identically() -> Result<()> {
        let dev = Device::Cpu;
        let config = AdamWConfig {
            lr: 0.05,
            ..Default::default()
        };
        let run = |split: bool| -> Result<Vec<f32>> {
            let var = Var::new(&[0.3f32, -0.7], &dev)?;
            let mut opt = AdamW::new([("w".to_string(), var.clone())], config)?;
            for step in 0..4 {
                if split && step == 2 {
                    let state = opt.state()?;
                    opt = AdamW::new([("w".to_string(), var.clone())], config)?;
                    opt.load_state(&state)?;
                }
                let g = Tensor::new(&[step as f32 + 0.5, 1.0 - step as f32], &dev)?;
                let loss = (var.as_tensor() * g)?.sum_all()?;
                opt.step(&loss.backward()?)?;
            }
            var.as_tensor().to_vec1::<f32>()
        };
        assert_eq!(run(false)?, run(true)?);
        Ok(())
    }

    #[test]
    fn saved_state_equals_the_state_tensors() -> Result<()> {
        let dev = Device::Cpu;
        for optimizer in [OptimizerKind::AdamW, OptimizerKind::AdamW8bit] {
            let big = Var::new(
                (0..5000).map(|i| (i as f32).sin()).collect::<Vec<_>>(),
                &dev,
            )?;
            let small = Var::new(&[[0.3f32, -0.7], [0.1, 0.2]], &dev)?;
            let config = AdamWConfig {
                lr: 0.01,
                optimizer,
                ..Default::default()
            };
            let named = [
                ("big".to_string(), big.clone()),
                ("small".to_string(), small.clone()),
            ];
            let mut opt = AdamW::new(named, config)?;
            for step in 0..2 {
                let loss = ((big.as_tensor() * (step as f64 + 0.5))?.sum_all()?
                    + small.as_tensor().sqr()?.sum_all()?)?;
                opt.step(&loss.backward()?)?;
            }
            let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
            let path = dir.path().join("optimizer.safetensors");
            opt.save_state(&path).map_err(candle_core::Error::wrap)?;
            let saved = candle_core::safetensors::load(&path, &dev)?;
            let state = opt.state()?;
            assert_eq!(saved.len(), state.len());
            for (k, t) in &state {
                let s = &saved[k];
                assert_eq!((s.dtype(), s.dims()), (t.dtype(), t.dims()), "{k}");
                let a = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let b = s.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                assert_eq!(a, b, "{k}");
            }
        }
        Ok(())
    }

    #[test]
    fn optimizer_kind_reads_its_config_spelling() {
        #[derive(serde::Deserialize)]
        struct Wrap {
            adamw: AdamWConfig,
        }
        let toml_in = "[adamw]\nlr = 1e-4\nbeta1 = 0.9\nbeta2 = 0.999\neps = 1e-8\n\
                       weight_decay = 0.01\noptimizer = \"adamw8bit\"\n";
        let w: Wrap = toml::from_str(toml_in).unwrap();
        assert_eq!(w.adamw.optimizer, OptimizerKind::AdamW8bit);
        assert_eq!(w.adamw.min_8bit_size, 4096);
        // Configs written before the field existed read as plain AdamW.
        let old = toml_in.replace("optimizer = \"adamw8bit\"\n", "");
        let w: Wrap = toml::from_str(&old).unwrap();
        assert_eq!(w.adamw.optimizer, OptimizerKind::AdamW);
        let bad = toml_in.replace("adamw8bit", "adam8");
        assert!(toml::from_str::<Wrap>(&bad).is_err());
    }

    #[test]
    fn eight_bit_states_for_large_tensors_only_and_kind_mismatch_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let vars = || -> Result<Vec<(String, Var)>> {
            Ok(vec![
                ("big".to_string(), Var::zeros(4096, DType::F32, &dev)?),
                ("small".to_string(), Var::zeros(4095, DType::F32, &dev)?),
            ])
        };
        let eight = AdamWConfig {
            optimizer: OptimizerKind::AdamW8bit,
            ..Default::default()
        };
        let opt8 = AdamW::new(vars()?, eight)?;
        let state8 = opt8.state()?;
        assert_eq!(state8["big.state1"].dtype(), DType::U8);
        assert_eq!(state8["big.absmax2"].dims(), &[16]);
        assert!(state8.contains_key("small.exp_avg"));
        assert!(!state8.contains_key("big.exp_avg"));
        assert_eq!(opt8.state_bytes(), 2 * 4096 + 4 * 2 * 16 + 8 * 4095);

        let mut opt32 = AdamW::new(vars()?, AdamWConfig::default())?;
        let err = opt32.load_state(&state8).unwrap_err().to_string();
        assert!(
            err.contains("big.state1") && err.contains("adamw8bit"),
            "{err}"
        );
        let mut opt8 = AdamW::new(vars()?, eight)?;
        let err = opt8.load_state(&opt32.state()?).unwrap_err().to_string();
        assert!(
            err.contains("big.exp_avg") && err.contains("optimizer = \"adamw\""),
            "{err}"
        );
        opt8.load_state(&state8)?;
        Ok(())
    }
}
