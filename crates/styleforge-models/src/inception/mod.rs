//! The InceptionV3 that FID is defined on, returning the 2048-d pool3 features.
//!
//! This is pytorch-fid's `fid_inception_v3()` (github.com/mseitzer/pytorch-fid,
//! `pytorch_fid/inception.py`), a port of the TensorFlow graph `inception-2015-12-05` that the
//! original FID code (Heusel et al., 2017) used. It differs from torchvision's InceptionV3:
//! the average pools of the A, C and E blocks leave the padded zeros out of the mean
//! (`count_include_pad=False`), and the last E block (`Mixed_7c`) pools with a max instead
//! of an average. Batch norms run on their running statistics (eps 0.001) and are folded
//! into the convolutions at load time.
//!
//! Weights: one safetensors file with pytorch-fid's state-dict keys
//! (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`, ...), e.g. made from
//! `pt_inception-2015-12-05-6726825d.pth` by `tools/convert_fid_inception.py`. The
//! classifier (`fc.*`) is not used.
//!
//! Images reach the network at 299×299 through [`resize`] ([`ResizeMode::CleanFid`] or
//! [`ResizeMode::PytorchFid`]).

mod blocks;
pub mod resize;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use resize::{resize_chw, resize_for_fid, rgb8_to_chw, ResizeMode, FID_INPUT_SIZE};

use crate::error::{ModelError, Result};
use crate::weights::WeightStore;
use blocks::{
    global_avg_pool, max_pool_3x3_s2, BasicConv2d, EPool, InceptionA, InceptionB, InceptionC,
    InceptionD, InceptionE,
};

/// The length of a feature vector (the pool3 output).
pub const FEATURE_DIM: usize = 2048;

/// pytorch-fid's FID InceptionV3 up to the final average pool (`InceptionV3([3])`).
#[derive(Debug, Clone)]
#[allow(non_snake_case)] // fields named like the checkpoint keys
pub struct FidInceptionV3 {
    Conv2d_1a_3x3: BasicConv2d,
    Conv2d_2a_3x3: BasicConv2d,
    Conv2d_2b_3x3: BasicConv2d,
    Conv2d_3b_1x1: BasicConv2d,
    Conv2d_4a_3x3: BasicConv2d,
    Mixed_5b: InceptionA,
    Mixed_5c: InceptionA,
    Mixed_5d: InceptionA,
    Mixed_6a: InceptionB,
    Mixed_6b: InceptionC,
    Mixed_6c: InceptionC,
    Mixed_6d: InceptionC,
    Mixed_6e: InceptionC,
    Mixed_7a: InceptionD,
    Mixed_7b: InceptionE,
    Mixed_7c: InceptionE,
}

impl FidInceptionV3 {
    /// Loads the weights from one safetensors file (pytorch-fid key names, any float dtype;
    /// computed in f32) onto `device`. Every tensor must be present with its shape; tensors
    /// other than `fc.*` and `*.num_batches_tracked` that the model does not use are logged.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let store = Arc::new(WeightStore::frozen(&[path])?);
        let model = Self::from_var_builder(store.var_builder(DType::F32, device))?;
        let unused: Vec<String> = store
            .unused()
            .into_iter()
            .filter(|n| !n.starts_with("fc.") && !n.ends_with("num_batches_tracked"))
            .collect();
        if !unused.is_empty() {
            tracing::warn!(
                "{}: {} tensors not used by the FID InceptionV3 (first: {})",
                path.display(),
                unused.len(),
                unused[0]
            );
        }
        Ok(model)
    }

    /// Builds the network from `vb` (pytorch-fid key names, no prefix).
    pub fn from_var_builder(vb: VarBuilder) -> Result<Self> {
        let conv =
            |cin, cout, k, s, p, name: &str| BasicConv2d::square(cin, cout, k, s, p, vb.pp(name));
        Ok(Self {
            Conv2d_1a_3x3: conv(3, 32, 3, 2, 0, "Conv2d_1a_3x3")?,
            Conv2d_2a_3x3: conv(32, 32, 3, 1, 0, "Conv2d_2a_3x3")?,
            Conv2d_2b_3x3: conv(32, 64, 3, 1, 1, "Conv2d_2b_3x3")?,
            Conv2d_3b_1x1: conv(64, 80, 1, 1, 0, "Conv2d_3b_1x1")?,
            Conv2d_4a_3x3: conv(80, 192, 3, 1, 0, "Conv2d_4a_3x3")?,
            Mixed_5b: InceptionA::new(192, 32, vb.pp("Mixed_5b"))?,
            Mixed_5c: InceptionA::new(256, 64, vb.pp("Mixed_5c"))?,
            Mixed_5d: InceptionA::new(288, 64, vb.pp("Mixed_5d"))?,
            Mixed_6a: InceptionB::new(288, vb.pp("Mixed_6a"))?,
            Mixed_6b: InceptionC::new(768, 128, vb.pp("Mixed_6b"))?,
            Mixed_6c: InceptionC::new(768, 160, vb.pp("Mixed_6c"))?,
            Mixed_6d: InceptionC::new(768, 160, vb.pp("Mixed_6d"))?,
            Mixed_6e: InceptionC::new(768, 192, vb.pp("Mixed_6e"))?,
            Mixed_7a: InceptionD::new(768, vb.pp("Mixed_7a"))?,
            Mixed_7b: InceptionE::new(1280, EPool::AvgExcludePad, vb.pp("Mixed_7b"))?,
            Mixed_7c: InceptionE::new(2048, EPool::Max, vb.pp("Mixed_7c"))?,
        })
    }

    /// Images `[n, 3, 299, 299]` with values in [0, 1] (already resized, see [`resize`]) →
    /// pool3 features `[n, 2048]` (f32). The images are scaled to [-1, 1] (`2x − 1`) first,
    /// as pytorch-fid's `normalize_input=True` does.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let s = FID_INPUT_SIZE;
        match images.dims() {
            &[n, 3, h, w] if n > 0 && h == s && w == s => {}
            other => {
                return Err(ModelError::BadInput(format!(
                    "FID InceptionV3 expects images [n, 3, {s}, {s}] with values in [0, 1] \
                     (resize them first with inception::resize_for_fid), got {other:?}"
                )))
            }
        }
        let x = images.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
        // Block 0: input → first max pool.
        let x = self.Conv2d_1a_3x3.forward(&x)?;
        let x = self.Conv2d_2a_3x3.forward(&x)?;
        let x = self.Conv2d_2b_3x3.forward(&x)?;
        let x = max_pool_3x3_s2(&x)?;
        // Block 1: → second max pool.
        let x = self.Conv2d_3b_1x1.forward(&x)?;
        let x = self.Conv2d_4a_3x3.forward(&x)?;
        let x = max_pool_3x3_s2(&x)?;
        // Block 2: 35×35 and 17×17 Inception blocks.
        let x = self.Mixed_5b.forward(&x)?;
        let x = self.Mixed_5c.forward(&x)?;
        let x = self.Mixed_5d.forward(&x)?;
        let x = self.Mixed_6a.forward(&x)?;
        let x = self.Mixed_6b.forward(&x)?;
        let x = self.Mixed_6c.forward(&x)?;
        let x = self.Mixed_6d.forward(&x)?;
        let x = self.Mixed_6e.forward(&x)?;
        // Block 3: 8×8 blocks and the final average pool.
        let x = self.Mixed_7a.forward(&x)?;
        let x = self.Mixed_7b.forward(&x)?;
        let x = self.Mixed_7c.forward(&x)?;
        Ok(global_avg_pool(&x)?)
    }
}
