//! The pictures of pretraining: an endless stream of toy-world renders, or a captioned
//! folder drawn epoch-wise.

use candle_core::{Device, Tensor};
use styleforge_world::World;

use super::{DataSource, PretrainConfig};
use crate::data::{EpochSampler, ImageFolder, Preprocess};
use crate::error::Result;
use crate::image_io::rgb_to_tensor;

/// The pictures of the UNet stage.
pub(super) enum DataSet {
    World(World),
    Folder {
        folder: ImageFolder,
        prep: Preprocess,
        captions: Vec<String>,
    },
}

impl DataSet {
    pub(super) fn open(cfg: &PretrainConfig) -> Result<Self> {
        match cfg.data.source {
            DataSource::World => Ok(DataSet::World(
                World::new(cfg.data.world_seed)
                    .with_size(cfg.data.size)
                    .with_styles(&cfg.data.styles),
            )),
            DataSource::Folder => {
                let root = cfg.data.folder.clone().unwrap_or_default();
                let prep = Preprocess::new(cfg.data.size);
                let folder = ImageFolder::scan(&root, &prep, 1)?;
                let captions: Vec<String> = folder
                    .entries()
                    .iter()
                    .map(|e| e.caption.clone().unwrap_or_default())
                    .collect();
                let missing = captions.iter().filter(|c| c.is_empty()).count();
                if missing > 0 {
                    tracing::warn!(
                        "{} of {} images in {} have no caption; they are trained with the empty caption (unconditional)",
                        missing,
                        captions.len(),
                        root.display()
                    );
                }
                Ok(DataSet::Folder {
                    folder,
                    prep,
                    captions,
                })
            }
        }
    }

    /// Number of images for the epoch sampler (a world is endless: 1, unused).
    pub(super) fn sampler_len(&self) -> usize {
        match self {
            DataSet::World(_) => 1,
            DataSet::Folder { folder, .. } => folder.len(),
        }
    }

    /// The images `[b, 3, s, s]` in [-1, 1] and captions of one batch.
    pub(super) fn batch(
        &self,
        step: usize,
        b: usize,
        sampler: &mut EpochSampler,
        device: &Device,
    ) -> Result<(Tensor, Vec<String>)> {
        let mut images = Vec::with_capacity(b);
        let mut captions = Vec::with_capacity(b);
        for row in 0..b {
            match self {
                DataSet::World(world) => {
                    let s = world.sample((step * b + row) as u64);
                    images.push(rgb_to_tensor(&s.image, device)?);
                    captions.push(s.caption);
                }
                DataSet::Folder {
                    folder,
                    prep,
                    captions: all,
                } => {
                    let i = sampler.next_index();
                    images.push(folder.tensor(i, prep, false, device)?.unsqueeze(0)?);
                    captions.push(all[i].clone());
                }
            }
        }
        Ok((Tensor::cat(&images, 0)?, captions))
    }
}

/// Renders `indices` of `world` as one `[n, 3, s, s]` tensor in [-1, 1].
pub(super) fn world_images(
    world: &World,
    indices: impl Iterator<Item = u64>,
    device: &Device,
) -> Result<Tensor> {
    let images = indices
        .map(|i| rgb_to_tensor(&world.sample(i).image, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images, 0)?)
}
