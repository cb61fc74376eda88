//! Building blocks shared by the UNet and the VAE, named as diffusers names them so that
//! weights load by path (`resnets.0.conv1.weight`).

pub mod resnet;
pub mod sampling;
pub mod transformer;

pub use resnet::ResnetBlock2D;
pub use sampling::{Downsample2D, Upsample2D};
pub use transformer::Transformer2DModel;
