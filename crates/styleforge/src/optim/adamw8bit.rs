//! bitsandbytes' 8-bit AdamW (`bnb.optim.AdamW8bit`, Dettmers et al. 2022, "8-bit
//! Optimizers via Block-wise Quantization"), as its CPU backend computes it (bitsandbytes
//! 0.50.2), for [`super::AdamW`] with [`super::OptimizerKind::AdamW8bit`].
//!
//! Tensors with at least `min_8bit_size` elements keep both moments as one byte per element:
//! a code into a 256-entry dynamic map (signed for the first moment, unsigned for the second)
//! scaled by one f32 absmax per block of 256 elements. A step dequantises a block, updates
//! moments and parameter in f32, and quantises the new moments with the new block absmax.
//! Smaller tensors keep f32 moments and bitsandbytes' 32-bit update, whose denominator is
//! `sqrt(v) + eps·√(1-β₂ᵗ)` (PyTorch's is `sqrt(v)/√(1-β₂ᵗ) + eps`).
//!
//! Where bitsandbytes' results hinge on rounding, this follows them bit for bit: the maps as
//! `torch.linspace` builds them on AVX2/AVX-512 CPUs (fused multiply-adds), the moment updates
//! with PyTorch's fused multiply-adds (`add_(alpha=)`, `addcmul_`), and quantisation through
//! bitsandbytes' 65,536-bin lookup table rather than an exact nearest code (so a 0 moment is
//! stored as the small positive code nearest the centre of its bin, ≈2·10⁻⁵·absmax, as
//! bitsandbytes stores it). Codes and absmax then match bitsandbytes exactly; parameters can
//! differ in the last bit, as PyTorch's CPU `sqrt` (MKL) is not always correctly rounded.
//! bitsandbytes' own maps differ on CPUs where torch runs its plain (non-AVX2) kernels.
//! Everything is block-local, so the threads a step runs on change no result.

use std::sync::OnceLock;

use super::AdamWConfig;

/// Elements per quantisation block (bitsandbytes' optimizer blocksize).
pub const BLOCKSIZE: usize = 256;

/// bitsandbytes' default `min_8bit_size`: tensors with fewer values keep 32-bit moments.
pub const MIN_8BIT_SIZE: usize = 4096;

/// Bins of the quantisation lookup table over [-1, 1] (bitsandbytes' `kLUTSize`).
const LUT_SIZE: usize = 65536;

/// Tensors of this size and larger run on rayon's threads, a chunk of blocks per task.
const CHUNK: usize = 128 * BLOCKSIZE;

/// bitsandbytes' dynamic quantisation map (`functional.create_dynamic_map(signed)`, with its
/// defaults `max_exponent_bits = 7`, `total_bits = 8`), sorted ascending.
///
/// For each decade `10⁻⁶ … 10⁰` the midpoints of `linspace(0.1, 1, k + 1)` (k = 2ⁱ values,
/// 2ⁱ⁺¹ unsigned), with their negatives when signed, plus 0 and 1. The f32 arithmetic is
/// torch's: its vectorised CPU `linspace` computes `start + step·i` (first half) and
/// `end - step·(n-1-i)` (second half) with fused multiply-adds.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    const DECADES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for (i, decade) in DECADES.iter().enumerate() {
        let items = if signed {
            (1 << i) + 1
        } else {
            (1 << (i + 1)) + 1
        };
        let bounds = torch_linspace(0.1, 1.0, items);
        let scale = *decade as f32;
        for pair in bounds.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut map = [0.0f32; 256];
    map.copy_from_slice(&data);
    map
}

/// `torch.linspace(start, end, steps, dtype=float32)` on an AVX2/AVX-512 CPU.
fn torch_linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// A map and the lookup table bitsandbytes' CPU quantiser uses for it: bin `i` of 65,536
/// over [-1, 1] holds the code whose value is nearest the bin's centre (ties to the lower).
struct Codebook {
    map: [f32; 256],
    lut: Box<[u8]>,
}

impl Codebook {
    fn new(map: [f32; 256]) -> Self {
        let mut midpoints = [0.0f32; 255];
        for (i, mid) in midpoints.iter_mut().enumerate() {
            *mid = 0.5 * (map[i] + map[i + 1]);
        }
        let mut lut = vec![0u8; LUT_SIZE].into_boxed_slice();
        let mut code = 0usize;
        for (i, slot) in lut.iter_mut().enumerate() {
            let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
            while code < 255 && midpoints[code] < val {
                code += 1;
            }
            *slot = code as u8;
        }
        Self { map, lut }
    }

    /// Codes for `values` scaled by their block's `absmax` (bitsandbytes' `quantize_cpu`).
    #[inline(always)]
    fn quantize(&self, values: &[f32], absmax: f32, out: &mut [u8]) {
        if absmax == 0.0 {
            out.fill(0);
            return;
        }
        let inv = 1.0 / absmax;
        let mut bins = [0u32; BLOCKSIZE];
        let bins = &mut bins[..values.len()];
        for (bin, &x) in bins.iter_mut().zip(values) {
            let t = (x * inv).clamp(-1.0, 1.0);
            // A truncating float→int conversion of one fused multiply-add, as compiled.
            *bin = ((t + 1.0) * 0.5).mul_add((LUT_SIZE - 1) as f32, 0.5) as u32;
        }
        for (o, &bin) in out.iter_mut().zip(bins.iter()) {
            *o = self.lut[bin as usize & (LUT_SIZE - 1)];
        }
    }
}

/// The signed (first moment) and unsigned (second moment) codebooks, built once.
struct Codebooks {
    signed: Codebook,
    unsigned: Codebook,
}

fn codebooks() -> &'static Codebooks {
    static BOOKS: OnceLock<Codebooks> = OnceLock::new();
    BOOKS.get_or_init(|| Codebooks {
        signed: Codebook::new(dynamic_map(true)),
        unsigned: Codebook::new(dynamic_map(false)),
    })
}

/// Both moments of one tensor, block-wise quantised (bitsandbytes' `state1`, `state2`,
/// `absmax1`, `absmax2`): about 2 bytes per element instead of 8.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Blockwise8 {
    pub(super) state1: Vec<u8>,
    pub(super) state2: Vec<u8>,
    pub(super) absmax1: Vec<f32>,
    pub(super) absmax2: Vec<f32>,
}

impl Blockwise8 {
    /// Zero moments for `n` elements (codes 0 with absmax 0 dequantise to 0, as in
    /// bitsandbytes' freshly initialised state).
    pub(super) fn zeros(n: usize) -> Self {
        let blocks = n.div_ceil(BLOCKSIZE);
        Self {
            state1: vec![0; n],
            state2: vec![0; n],
            absmax1: vec![0.0; blocks],
            absmax2: vec![0.0; blocks],
        }
    }

    /// Blocks for `n` elements.
    pub(super) fn blocks(n: usize) -> usize {
        n.div_ceil(BLOCKSIZE)
    }
}

/// One step's coefficients, rounded to f32 where PyTorch rounds the Python scalars.
#[derive(Debug, Clone, Copy)]
pub(super) struct BnbStep {
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    /// `1 - lr·wd`.
    decay: f32,
    /// 8-bit update: `-lr / (1-β₁ᵗ)`.
    step_size: f32,
    /// 8-bit update: `√(1-β₂ᵗ)`.
    correction2: f32,
    /// 32-bit update: `-lr·√(1-β₂ᵗ) / (1-β₁ᵗ)`.
    step_size_32: f32,
    /// 32-bit update: `eps·√(1-β₂ᵗ)`.
    eps_correction2: f32,
}

impl BnbStep {
    /// Coefficients of step `t` (1-based); bias corrections in f64 with `pow`, as Python's
    /// `beta ** step`.
    pub(super) fn new(c: &AdamWConfig, t: u64) -> Self {
        let t = t as f64;
        let correction1 = 1.0 - c.beta1.powf(t);
        let correction2 = (1.0 - c.beta2.powf(t)).sqrt();
        Self {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
            decay: (1.0 - c.lr * c.weight_decay) as f32,
            step_size: (-c.lr / correction1) as f32,
            correction2: correction2 as f32,
            step_size_32: (-c.lr * correction2 / correction1) as f32,
            eps_correction2: (c.eps * correction2) as f32,
        }
    }
}

/// bitsandbytes' 8-bit block-wise update of `param` in place (`grad` and `param` of the same
/// length, `state` sized for it).
pub(super) fn update_8bit(param: &mut [f32], grad: &[f32], state: &mut Blockwise8, c: &BnbStep) {
    let Blockwise8 {
        state1,
        state2,
        absmax1,
        absmax2,
    } = state;
    if param.len() < 2 * CHUNK {
        blocks_8bit(param, grad, state1, state2, absmax1, absmax2, c);
        return;
    }
    use rayon::prelude::*;
    const CHUNK_BLOCKS: usize = CHUNK / BLOCKSIZE;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(state1.par_chunks_mut(CHUNK))
        .zip(state2.par_chunks_mut(CHUNK))
        .zip(absmax1.par_chunks_mut(CHUNK_BLOCKS))
        .zip(absmax2.par_chunks_mut(CHUNK_BLOCKS))
        .for_each(|(((((p, g), s1), s2), a1), a2)| blocks_8bit(p, g, s1, s2, a1, a2, c));
}

/// bitsandbytes' 32-bit update (tensors below `min_8bit_size`) of `param` and its f32
/// moments in place.
pub(super) fn update_32bit(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    c: &BnbStep,
) {
    if param.len() < 2 * CHUNK {
        elements_32bit(param, grad, m, v, c);
        return;
    }
    use rayon::prelude::*;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| elements_32bit(p, g, m, v, c));
}

// PyTorch and bitsandbytes round some products only once (fused multiply-adds), which
// `f32::mul_add` reproduces exactly; without the CPU feature it is a slow library call, so the
// kernels are compiled a second time with FMA enabled and chosen at run time.

fn blocks_8bit(
    param: &mut [f32],
    grad: &[f32],
    state1: &mut [u8],
    state2: &mut [u8],
    absmax1: &mut [f32],
    absmax2: &mut [f32],
    c: &BnbStep,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { blocks_8bit_fma(param, grad, state1, state2, absmax1, absmax2, c) };
        return;
    }
    blocks_8bit_body(param, grad, state1, state2, absmax1, absmax2, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn blocks_8bit_fma(
    param: &mut [f32],
    grad: &[f32],
    state1: &mut [u8],
    state2: &mut [u8],
    absmax1: &mut [f32],
    absmax2: &mut [f32],
    c: &BnbStep,
) {
    blocks_8bit_body(param, grad, state1, state2, absmax1, absmax2, c);
}

/// The 8-bit update of whole blocks (the slices start on a block boundary), in the order of
/// bitsandbytes' CPU `optimizer_update_8bit_blockwise`: dequantise (`code[q]·absmax`), update
/// the moments (`m·β₁ + (1-β₁)·g`, `v·β₂ + ((1-β₂)·g)·g`, each one fused multiply-add), decay
/// the parameter, `p + (-lr/(1-β₁ᵗ)·m) / (sqrt(v)/√(1-β₂ᵗ) + eps)`, then the new absmax of
/// each block and the codes.
#[inline(always)]
fn blocks_8bit_body(
    param: &mut [f32],
    grad: &[f32],
    state1: &mut [u8],
    state2: &mut [u8],
    absmax1: &mut [f32],
    absmax2: &mut [f32],
    c: &BnbStep,
) {
    let books = codebooks();
    let (signed, unsigned) = (&books.signed, &books.unsigned);
    let blocks = param
        .chunks_mut(BLOCKSIZE)
        .zip(grad.chunks(BLOCKSIZE))
        .zip(state1.chunks_mut(BLOCKSIZE))
        .zip(state2.chunks_mut(BLOCKSIZE))
        .zip(absmax1.iter_mut().zip(absmax2.iter_mut()));
    for ((((p, g), q1), q2), (a1, a2)) in blocks {
        let n = p.len();
        let (mut m, mut v) = ([0.0f32; BLOCKSIZE], [0.0f32; BLOCKSIZE]);
        let (m, v) = (&mut m[..n], &mut v[..n]);
        // In phases, so that the arithmetic vectorises around the table look-ups.
        let (scale1, scale2) = (*a1, *a2);
        for ((m, v), (&q1, &q2)) in m.iter_mut().zip(v.iter_mut()).zip(q1.iter().zip(q2.iter())) {
            *m = signed.map[q1 as usize] * scale1;
            *v = unsigned.map[q2 as usize] * scale2;
        }
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = g.mul_add(c.one_minus_beta1, *m * c.beta1);
            *v = (c.one_minus_beta2 * g).mul_add(g, *v * c.beta2);
            let denom = v.sqrt() / c.correction2 + c.eps;
            *p = *p * c.decay + (c.step_size * *m) / denom;
        }
        // std::max(absmax, fabs(x)) from 0: NaNs are skipped, as `f32::max` skips them.
        *a1 = m.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        *a2 = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        signed.quantize(m, *a1, q1);
        unsigned.quantize(v, *a2, q2);
    }
}

fn elements_32bit(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: &BnbStep) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { elements_32bit_fma(param, grad, m, v, c) };
        return;
    }
    elements_32bit_body(param, grad, m, v, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn elements_32bit_fma(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: &BnbStep) {
    elements_32bit_body(param, grad, m, v, c);
}

/// bitsandbytes' CPU `optimizer_update_32bit` for Adam: the moments as in the 8-bit update,
/// the decay, then `p + step·(m / (sqrt(v) + eps·√(1-β₂ᵗ)))` as one fused multiply-add.
#[inline(always)]
fn elements_32bit_body(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: &BnbStep) {
    for (((p, &g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        *m = g.mul_add(c.one_minus_beta1, *m * c.beta1);
        *v = (c.one_minus_beta2 * g).mul_add(g, *v * c.beta2);
        let update = *m / (v.sqrt() + c.eps_correction2);
        *p = update.mul_add(c.step_size_32, *p * c.decay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_sorted_and_span_the_range() {
        let signed = dynamic_map(true);
        let unsigned = dynamic_map(false);
        assert!(signed.windows(2).all(|w| w[0] <= w[1]));
        assert!(unsigned.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(signed[255], 1.0);
        assert_eq!(unsigned[255], 1.0);
        assert_eq!(unsigned[0], 0.0);
        assert!(signed[0] < -0.99 && signed.contains(&0.0));
    }

    #[test]
    fn lookup_table_picks_the_nearest_code_of_each_bin() {
        let book = Codebook::new(dynamic_map(true));
        // ±1 go to the ends; 0 falls in the bin centred on 1/65535, whose nearest code is a
        // small positive one, not the zero code (bitsandbytes' CPU quantiser does the same).
        let mut out = [0u8; 3];
        book.quantize(&[0.0, 1.0, -1.0], 1.0, &mut out);
        assert_eq!(out[1..], [255, 0]);
        let zero = book.map[out[0] as usize];
        assert!(zero > 0.0 && zero < 3e-5, "{zero}");
        book.quantize(&[0.5, -0.25, 2.0], 0.0, &mut out);
        assert_eq!(out, [0, 0, 0], "an all-zero block has absmax 0 and codes 0");
        for (i, &x) in book.map.iter().enumerate().filter(|(_, &x)| x.abs() > 1e-2) {
            let mut o = [0u8];
            book.quantize(&[x], 1.0, &mut o);
            assert_eq!(o[0] as usize, i, "{x}");
        }
    }

    #[test]
    fn threaded_8bit_update_equals_one_thread() {
        // Above two chunks the blocks run on rayon's threads; block-local, so the same bits
        // as one call per half (split on a block boundary).
        let n = 2 * CHUNK + 3 * BLOCKSIZE + 17;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let grad: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 1e-2).collect();
        let config = AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        };
        let mut whole = init.clone();
        let mut whole_state = Blockwise8::zeros(n);
        let split = CHUNK + 5 * BLOCKSIZE;
        let (mut lo, mut hi) = (init[..split].to_vec(), init[split..].to_vec());
        let (mut lo_state, mut hi_state) = (Blockwise8::zeros(split), Blockwise8::zeros(n - split));
        for t in 1..=3 {
            let c = BnbStep::new(&config, t);
            update_8bit(&mut whole, &grad, &mut whole_state, &c);
            update_8bit(&mut lo, &grad[..split], &mut lo_state, &c);
            update_8bit(&mut hi, &grad[split..], &mut hi_state, &c);
        }
        assert_eq!(whole[..split], lo[..]);
        assert_eq!(whole[split..], hi[..]);
        assert_eq!(whole_state.state1[..split], lo_state.state1[..]);
        assert_eq!(whole_state.state2[split..], hi_state.state2[..]);
        let b = split / BLOCKSIZE;
        assert_eq!(whole_state.absmax1[..b], lo_state.absmax1[..]);
        assert_eq!(whole_state.absmax2[b..], hi_state.absmax2[..]);
    }

    #[test]
    fn fused_multiply_add_kernels_equal_the_portable_ones() {
        // The AVX2+FMA build and the portable one (`mul_add` as a library call) round alike.
        let n = 7 * BLOCKSIZE + 100;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let grad: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 1e-3).collect();
        let config = AdamWConfig::default();
        let (mut p1, mut p2) = (init.clone(), init.clone());
        let (mut s1, mut s2) = (Blockwise8::zeros(n), Blockwise8::zeros(n));
        let (mut m1, mut v1, mut m2, mut v2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut q1, mut q2) = (init.clone(), init.clone());
        for t in 1..=3 {
            let c = BnbStep::new(&config, t);
            let Blockwise8 {
                state1,
                state2,
                absmax1,
                absmax2,
            } = &mut s1;
            blocks_8bit(&mut p1, &grad, state1, state2, absmax1, absmax2, &c);
            let Blockwise8 {
                state1,
                state2,
                absmax1,
                absmax2,
            } = &mut s2;
            blocks_8bit_body(&mut p2, &grad, state1, state2, absmax1, absmax2, &c);
            elements_32bit(&mut q1, &grad, &mut m1, &mut v1, &c);
            elements_32bit_body(&mut q2, &grad, &mut m2, &mut v2, &c);
        }
        assert_eq!(p1, p2);
        assert_eq!(s1, s2);
        assert_eq!((q1, m1, v1), (q2, m2, v2));
    }
}
