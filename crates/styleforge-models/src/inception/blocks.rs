//! The layers of the FID InceptionV3: `BasicConv2d` (convolution + inference batch norm +
//! ReLU), the Inception A–E blocks as pytorch-fid patches them, and the pools.
//!
//! Field names follow the checkpoint keys (`branch7x7dbl_3`, `conv`, `bn`), so a block loads
//! with `vb.pp("Mixed_6b").pp("branch7x7dbl_3")`.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::nn::kernels;

/// torchvision's `BatchNorm2d(out_channels, eps=0.001)` in `BasicConv2d`.
const BN_EPS: f64 = 1e-3;

/// `Conv2d(bias=False)` → `BatchNorm2d(eps=0.001)` (inference: running statistics) → ReLU,
/// with the batch norm folded into the kernel and a bias at load time.
#[derive(Debug, Clone)]
pub(crate) struct BasicConv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    /// `(height, width)` zero padding.
    padding: (usize, usize),
}

impl BasicConv2d {
    /// Loads `conv.weight` `[out, in, kh, kw]` and `bn.{weight, bias, running_mean,
    /// running_var}` `[out]`.
    pub(crate) fn new(
        cin: usize,
        cout: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb
            .pp("conv")
            .get((cout, cin, kernel.0, kernel.1), "weight")?;
        let bn = vb.pp("bn");
        let gamma = bn.get(cout, "weight")?;
        let beta = bn.get(cout, "bias")?;
        let mean = bn.get(cout, "running_mean")?;
        let var = bn.get(cout, "running_var")?;
        // y = gamma · (conv(x) − mean) / sqrt(var + eps) + beta
        //   = conv_{w · s}(x) + (beta − mean · s),  s = gamma / sqrt(var + eps).
        let s = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?;
        let bias = (beta - (mean * &s)?)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// A square kernel with symmetric padding.
    pub(crate) fn square(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::new(cin, cout, (kernel, kernel), stride, (padding, padding), vb)
    }

    /// `[n, cin, h, w]` → `[n, cout, h', w']`, after the ReLU.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ph, pw) = self.padding;
        // Both convolution paths take one symmetric padding; the 1×7 / 7×1 kernels pad one
        // axis only, so pad those inputs here.
        let (x, pad) = if ph == pw {
            (x.clone(), ph)
        } else {
            let x = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
            (x, 0)
        };
        if let (Ok((n, _, h, w)), Ok((cout, cin, kh, kw))) = (x.dims4(), self.weight.dims4()) {
            let out = |len: usize, k: usize| (len + 2 * pad).saturating_sub(k) / self.stride + 1;
            crate::nn::flops::add_matmul(n * out(h, kh) * out(w, kw), cin * kh * kw, cout);
        }
        let y = if kernels::use_cpu_kernels(&x) && self.weight.dtype() == x.dtype() {
            kernels::conv::conv2d(&x, &self.weight, Some(&self.bias), self.stride, pad)?
        } else {
            x.conv2d(&self.weight, pad, self.stride, 1, 1)?
                .broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?
        };
        y.relu()
    }
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)` (no padding, floor).
pub(crate) fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d_with_stride(3, 2)
}

/// `F.max_pool2d(x, kernel_size=3, stride=1, padding=1)`: edge replication never changes a
/// 3×3 maximum (the replicated value is itself inside the window), unlike zero padding.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    x.pad_with_same(2, 1, 1)?
        .pad_with_same(3, 1, 1)?
        .max_pool2d_with_stride(3, 1)
}

/// `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)`: the
/// 3×3 sum over the zero-padded input divided by the number of real pixels in the window
/// (TensorFlow's average pool, which the FID blocks patch in).
fn avg_pool_3x3_same_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let xp = x.pad_with_zeros(2, 1, 1)?;
    let rows = ((xp.narrow(2, 0, h)? + xp.narrow(2, 1, h)?)? + xp.narrow(2, 2, h)?)?;
    let rp = rows.pad_with_zeros(3, 1, 1)?;
    let sum = ((rp.narrow(3, 0, w)? + rp.narrow(3, 1, w)?)? + rp.narrow(3, 2, w)?)?;
    let count = |i: usize, n: usize| 3 - usize::from(i == 0) - usize::from(i + 1 == n);
    let inv: Vec<f32> = (0..h)
        .flat_map(|i| (0..w).map(move |j| 1.0 / (count(i, h) * count(j, w)) as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    sum.broadcast_mul(&inv)
}

/// Global average pool `[n, c, h, w]` → `[n, c]` (`AdaptiveAvgPool2d((1, 1))`, flattened).
pub(crate) fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

/// `FIDInceptionA` (Mixed_5b/c/d): 1×1, 5×5, double 3×3 and average-pool branches.
#[derive(Debug, Clone)]
pub(crate) struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    /// `[n, cin, h, w]` → `[n, 224 + pool_features, h, w]`.
    pub(crate) fn new(cin: usize, pool_features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch1x1: BasicConv2d::square(cin, 64, 1, 1, 0, vb.pp("branch1x1"))?,
            branch5x5_1: BasicConv2d::square(cin, 48, 1, 1, 0, vb.pp("branch5x5_1"))?,
            branch5x5_2: BasicConv2d::square(48, 64, 5, 1, 2, vb.pp("branch5x5_2"))?,
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 1, 1, vb.pp("branch3x3dbl_3"))?,
            branch_pool: BasicConv2d::square(cin, pool_features, 1, 1, 0, vb.pp("branch_pool"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x)?)?;
        let b3 = self.branch3x3dbl_1.forward(x)?;
        let b3 = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&b3)?)?;
        let bp = self
            .branch_pool
            .forward(&avg_pool_3x3_same_exclude_pad(x)?)?;
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// `InceptionB` (Mixed_6a, unpatched): the grid reduction 35×35 → 17×17.
#[derive(Debug, Clone)]
pub(crate) struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    /// `[n, cin, h, w]` → `[n, 480 + cin, (h−3)/2+1, (w−3)/2+1]`.
    pub(crate) fn new(cin: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch3x3: BasicConv2d::square(cin, 384, 3, 2, 0, vb.pp("branch3x3"))?,
            branch3x3dbl_1: BasicConv2d::square(cin, 64, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 2, 0, vb.pp("branch3x3dbl_3"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?;
        let bd = self.branch3x3dbl_1.forward(x)?;
        let bd = self
            .branch3x3dbl_3
            .forward(&self.branch3x3dbl_2.forward(&bd)?)?;
        let bp = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, bd, bp], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b–e): factorised 7×7 branches (1×7 then 7×1).
#[derive(Debug, Clone)]
pub(crate) struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7_1: BasicConv2d,
    branch7x7_2: BasicConv2d,
    branch7x7_3: BasicConv2d,
    branch7x7dbl_1: BasicConv2d,
    branch7x7dbl_2: BasicConv2d,
    branch7x7dbl_3: BasicConv2d,
    branch7x7dbl_4: BasicConv2d,
    branch7x7dbl_5: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionC {
    /// `[n, cin, h, w]` → `[n, 768, h, w]`.
    pub(crate) fn new(cin: usize, c7: usize, vb: VarBuilder) -> Result<Self> {
        let row = |ci, co, name| BasicConv2d::new(ci, co, (1, 7), 1, (0, 3), vb.pp(name));
        let col = |ci, co, name| BasicConv2d::new(ci, co, (7, 1), 1, (3, 0), vb.pp(name));
        Ok(Self {
            branch1x1: BasicConv2d::square(cin, 192, 1, 1, 0, vb.pp("branch1x1"))?,
            branch7x7_1: BasicConv2d::square(cin, c7, 1, 1, 0, vb.pp("branch7x7_1"))?,
            branch7x7_2: row(c7, c7, "branch7x7_2")?,
            branch7x7_3: col(c7, 192, "branch7x7_3")?,
            branch7x7dbl_1: BasicConv2d::square(cin, c7, 1, 1, 0, vb.pp("branch7x7dbl_1"))?,
            branch7x7dbl_2: col(c7, c7, "branch7x7dbl_2")?,
            branch7x7dbl_3: row(c7, c7, "branch7x7dbl_3")?,
            branch7x7dbl_4: col(c7, c7, "branch7x7dbl_4")?,
            branch7x7dbl_5: row(c7, 192, "branch7x7dbl_5")?,
            branch_pool: BasicConv2d::square(cin, 192, 1, 1, 0, vb.pp("branch_pool"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let mut b7 = self.branch7x7_1.forward(x)?;
        for conv in [&self.branch7x7_2, &self.branch7x7_3] {
            b7 = conv.forward(&b7)?;
        }
        let mut bd = self.branch7x7dbl_1.forward(x)?;
        for conv in [
            &self.branch7x7dbl_2,
            &self.branch7x7dbl_3,
            &self.branch7x7dbl_4,
            &self.branch7x7dbl_5,
        ] {
            bd = conv.forward(&bd)?;
        }
        let bp = self
            .branch_pool
            .forward(&avg_pool_3x3_same_exclude_pad(x)?)?;
        Tensor::cat(&[b1, b7, bd, bp], 1)
    }
}

/// `InceptionD` (Mixed_7a, unpatched): the grid reduction 17×17 → 8×8.
#[derive(Debug, Clone)]
pub(crate) struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3_1: BasicConv2d,
    branch7x7x3_2: BasicConv2d,
    branch7x7x3_3: BasicConv2d,
    branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    /// `[n, cin, h, w]` → `[n, 512 + cin, (h−3)/2+1, (w−3)/2+1]`.
    pub(crate) fn new(cin: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            branch3x3_1: BasicConv2d::square(cin, 192, 1, 1, 0, vb.pp("branch3x3_1"))?,
            branch3x3_2: BasicConv2d::square(192, 320, 3, 2, 0, vb.pp("branch3x3_2"))?,
            branch7x7x3_1: BasicConv2d::square(cin, 192, 1, 1, 0, vb.pp("branch7x7x3_1"))?,
            branch7x7x3_2: BasicConv2d::new(192, 192, (1, 7), 1, (0, 3), vb.pp("branch7x7x3_2"))?,
            branch7x7x3_3: BasicConv2d::new(192, 192, (7, 1), 1, (3, 0), vb.pp("branch7x7x3_3"))?,
            branch7x7x3_4: BasicConv2d::square(192, 192, 3, 2, 0, vb.pp("branch7x7x3_4"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3_2.forward(&self.branch3x3_1.forward(x)?)?;
        let mut b7 = self.branch7x7x3_1.forward(x)?;
        for conv in [
            &self.branch7x7x3_2,
            &self.branch7x7x3_3,
            &self.branch7x7x3_4,
        ] {
            b7 = conv.forward(&b7)?;
        }
        let bp = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, b7, bp], 1)
    }
}

/// Which pool the branch_pool of an E block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EPool {
    /// `FIDInceptionE_1` (Mixed_7b): average pool without the padded zeros.
    AvgExcludePad,
    /// `FIDInceptionE_2` (Mixed_7c): max pool (a quirk of the TF graph FID was defined on).
    Max,
}

/// `FIDInceptionE_1` / `FIDInceptionE_2` (Mixed_7b/c): expanded 1×3 + 3×1 branches.
#[derive(Debug, Clone)]
pub(crate) struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    pool: EPool,
}

impl InceptionE {
    /// `[n, cin, h, w]` → `[n, 2048, h, w]`.
    pub(crate) fn new(cin: usize, pool: EPool, vb: VarBuilder) -> Result<Self> {
        let row = |ci, co, name| BasicConv2d::new(ci, co, (1, 3), 1, (0, 1), vb.pp(name));
        let col = |ci, co, name| BasicConv2d::new(ci, co, (3, 1), 1, (1, 0), vb.pp(name));
        Ok(Self {
            branch1x1: BasicConv2d::square(cin, 320, 1, 1, 0, vb.pp("branch1x1"))?,
            branch3x3_1: BasicConv2d::square(cin, 384, 1, 1, 0, vb.pp("branch3x3_1"))?,
            branch3x3_2a: row(384, 384, "branch3x3_2a")?,
            branch3x3_2b: col(384, 384, "branch3x3_2b")?,
            branch3x3dbl_1: BasicConv2d::square(cin, 448, 1, 1, 0, vb.pp("branch3x3dbl_1"))?,
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, 1, 1, vb.pp("branch3x3dbl_2"))?,
            branch3x3dbl_3a: row(384, 384, "branch3x3dbl_3a")?,
            branch3x3dbl_3b: col(384, 384, "branch3x3dbl_3b")?,
            branch_pool: BasicConv2d::square(cin, 192, 1, 1, 0, vb.pp("branch_pool"))?,
            pool,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b3 = self.branch3x3_1.forward(x)?;
        let b3a = self.branch3x3_2a.forward(&b3)?;
        let b3b = self.branch3x3_2b.forward(&b3)?;
        let bd = self.branch3x3dbl_1.forward(x)?;
        let bd = self.branch3x3dbl_2.forward(&bd)?;
        let bda = self.branch3x3dbl_3a.forward(&bd)?;
        let bdb = self.branch3x3dbl_3b.forward(&bd)?;
        let pooled = match self.pool {
            EPool::AvgExcludePad => avg_pool_3x3_same_exclude_pad(x)?,
            EPool::Max => max_pool_3x3_same(x)?,
        };
        let bp = self.branch_pool.forward(&pooled)?;
        Tensor::cat(&[b1, b3a, b3b, bda, bdb, bp], 1)
    }
}
