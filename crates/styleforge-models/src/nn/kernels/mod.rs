//! Fused CPU kernels (candle custom ops with their own backward) for the layers that
//! dominate a Stable Diffusion train step on the CPU.
//!
//! Each kernel works on contiguous `f32` data; the wrappers in the parent modules use
//! them only for CPU `f32` tensors and keep the plain-op composition (which is what runs on
//! CUDA) for everything else. Every kernel is tested against that composition, values and
//! gradients. Backward passes are single custom ops too (no second-order gradients).

pub mod attention;
pub mod bias;
pub mod conv;
pub mod geglu;
pub mod gelu;
pub mod norm;
pub mod peak;
pub mod runtime;
pub mod simd;
pub mod softmax;
#[cfg(test)]
mod timing;

pub use peak::gemm_peak_gflops;
pub use runtime::{cpu_threads, CpuRuntime, MallocTuning};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// Whether the fused CPU kernels apply to `x`: an `f32` tensor on the CPU.
pub(crate) fn use_cpu_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !force_plain()
}

/// `STYLEFORGE_PLAIN_OPS=1` turns the fused kernels off (for comparisons and profiling).
fn force_plain() -> bool {
    use std::sync::OnceLock;
    static PLAIN: OnceLock<bool> = OnceLock::new();
    *PLAIN.get_or_init(|| {
        std::env::var("STYLEFORGE_PLAIN_OPS").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// The contiguous `f32` data of a custom op's input.
pub(crate) fn slice_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A vector of `len` values that the caller overwrites entirely before reading any.
#[allow(clippy::uninit_vec)]
pub(crate) fn uninit(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `f32` has no invalid bit patterns and every caller writes all values before
    // reading them (skipping the zeroing pass, which also touches fresh pages twice).
    unsafe { v.set_len(len) };
    v
}

/// Threads to split work over (rayon's pool, which follows `RAYON_NUM_THREADS`).
pub(crate) fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// A raw pointer that may be shared across rayon tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: users only write disjoint ranges from different tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`, not its field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Row-major matrix views for [`matmul`]: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`; accumulates into `dst` when `accumulate`.
///
/// # Safety
/// The pointers and strides must address valid memory of the given sizes and `dst` must
/// not alias `lhs`/`rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    let par = if parallel && num_threads() > 1 {
        gemm::Parallelism::Rayon(num_threads())
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        par,
    );
}

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Result, Tensor};

    /// A deterministic pseudo-random tensor with values in `[-scale, scale)`.
    pub fn rand(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu)
    }

    /// Largest absolute difference relative to the largest magnitude of `b` (at least 1).
    pub fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        assert_eq!(a.dims(), b.dims());
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let mag = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        Ok(diff / mag.max(1.0))
    }
}

#[cfg(test)]
mod layer_tests {
    //! The layers' CPU kernel path against their plain-op path (what runs off the CPU).
    use super::test_util::{rand, rel_diff};
    use crate::nn::{attention, Conv2d, GroupNorm, LayerNorm};
    use candle_core::{DType, Device, Module, Result, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    fn grads_match(a: &Tensor, b: &Tensor, vars: &[Var], x: &Var, what: &str) -> Result<()> {
        let d = rel_diff(a, b)?;
        assert!(d < 1e-5, "{what}: value diff {d}");
        let gy = rand(a.dims(), 7, 1.0)?;
        let ga = (a * &gy)?.sum_all()?.backward()?;
        let gb = (b * &gy)?.sum_all()?.backward()?;
        let mut checked = 0;
        for (i, v) in vars.iter().chain(std::iter::once(x)).enumerate() {
            match (ga.get(v), gb.get(v)) {
                (Some(a), Some(b)) => {
                    let d = rel_diff(a, b)?;
                    assert!(d < 2e-5, "{what}: grad {i} diff {d}");
                    checked += 1;
                }
                (None, None) => {}
                _ => panic!("{what}: gradient {i} present on one path only"),
            }
        }
        assert!(checked > 0, "{what}: no gradients");
        Ok(())
    }

    fn random_vars(map: &VarMap) -> Result<Vec<Var>> {
        let data = map.data().lock().expect("varmap");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (_, v)) in vars.iter().enumerate() {
            v.set(&rand(v.dims(), 100 + i as u64, 0.7)?)?;
        }
        Ok(vars.into_iter().map(|(_, v)| v).collect())
    }

    #[test]
    fn kernel_and_plain_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let conv = Conv2d::new(6, 5, 3, 2, 1, vb.pp("down"))?;
        let conv1 = Conv2d::new(6, 4, 1, 1, 0, vb.pp("pointwise"))?;
        let gn = GroupNorm::new(3, 6, 1e-6, vb.pp("gn"))?;
        let ln = LayerNorm::new(7, 1e-5, vb.pp("ln"))?;
        let vars = random_vars(&map)?;
        // Odd sizes whose height and width leave different remainders under stride 2.
        let x = Var::from_tensor(&rand(&[2, 6, 7, 6], 1, 1.0)?)?;
        grads_match(
            &conv.forward(&x)?,
            &conv.forward_plain(&x)?,
            &vars,
            &x,
            "conv s2",
        )?;
        grads_match(
            &conv1.forward(&x)?,
            &conv1.forward_plain(&x)?,
            &vars,
            &x,
            "conv 1x1",
        )?;
        grads_match(
            &gn.forward(&x)?,
            &gn.forward_plain(&x)?,
            &vars,
            &x,
            "group norm",
        )?;
        let plain = gn.forward_plain(&x)?.silu()?;
        grads_match(
            &gn.forward_silu(&x)?,
            &plain,
            &vars,
            &x,
            "group norm + silu",
        )?;
        let t = Var::from_tensor(&rand(&[3, 5, 7], 2, 1.0)?)?;
        grads_match(
            &ln.forward(&t)?,
            &ln.forward_plain(&t)?,
            &vars,
            &t,
            "layer norm",
        )?;
        let q = Var::from_tensor(&rand(&[2, 3, 9, 4], 3, 1.0)?)?;
        let k = rand(&[2, 3, 5, 4], 4, 1.0)?;
        let fused = attention::scaled_dot_product_attention(&q, &k, &k, 0.5, None)?;
        let plain = attention::scaled_dot_product_attention_plain(&q, &k, &k, 0.5, None)?;
        grads_match(&fused, &plain, &[], &q, "attention")?;
        let s = Var::from_tensor(&rand(&[4, 11], 5, 3.0)?)?;
        let fused = attention::softmax_last_dim(&s)?;
        let plain = attention::softmax_last_dim_plain(&s)?;
        grads_match(&fused, &plain, &[], &s, "softmax")?;
        Ok(())
    }
}
