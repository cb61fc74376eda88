//! Where stochastic steps get their noise.
//!
//! Schedulers never create random numbers themselves: DDPM, DDIM with `eta > 0`, Euler
//! ancestral and DPM++ 2M SDE ask the caller's [`NoiseSource`] for standard normal noise of the
//! sample's shape, in the order diffusers would draw it. A pipeline passes a seeded source
//! ([`SeededNoise`]); tests pass the exact tensors diffusers used ([`QueuedNoise`]); schedulers
//! that never draw noise can be given [`NoNoise`]. Any closure
//! `FnMut(&Shape, DType, &Device) -> candle_core::Result<Tensor>` is a noise source too.

use std::collections::VecDeque;

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, SchedulerError};

/// A source of standard normal noise for stochastic scheduler steps.
pub trait NoiseSource {
    /// Returns a tensor of independent `N(0, 1)` values with the given shape, dtype and device.
    fn sample(&mut self, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor>;
}

impl<F> NoiseSource for F
where
    F: FnMut(&Shape, DType, &Device) -> candle_core::Result<Tensor>,
{
    fn sample(&mut self, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(self(shape, dtype, device)?)
    }
}

/// A noise source for deterministic schedulers: asking it for noise is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn sample(&mut self, shape: &Shape, _dtype: DType, _device: &Device) -> Result<Tensor> {
        Err(SchedulerError::Noise(format!(
            "this scheduler step is stochastic and needs noise of shape {shape:?}, but NoNoise was \
             passed; pass a SeededNoise (or another NoiseSource)"
        )))
    }
}

/// Seeded standard normal noise: ChaCha8 uniforms turned into normals by the Box-Muller
/// transform. Reproducible across platforms for a given seed, but not the same numbers as
/// torch's generator.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl SeededNoise {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// The next standard normal value.
    pub fn next_normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // Box-Muller: u1 in (0, 1] so that ln(u1) is finite.
        let u1: f64 = 1.0 - self.rng.gen::<f64>();
        let u2: f64 = self.rng.gen::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

impl NoiseSource for SeededNoise {
    fn sample(&mut self, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| self.next_normal() as f32)
            .collect();
        Ok(Tensor::from_vec(values, shape.clone(), device)?.to_dtype(dtype)?)
    }
}

/// Hands out prepared tensors in order (e.g. the noise diffusers drew), checking their shape.
#[derive(Debug, Clone, Default)]
pub struct QueuedNoise {
    queue: VecDeque<Tensor>,
    taken: usize,
}

impl QueuedNoise {
    /// A source that returns `tensors` one per request, in order.
    pub fn new(tensors: impl IntoIterator<Item = Tensor>) -> Self {
        Self {
            queue: tensors.into_iter().collect(),
            taken: 0,
        }
    }

    /// How many tensors have been handed out.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// How many tensors are left.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for QueuedNoise {
    fn sample(&mut self, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        let noise = self.queue.pop_front().ok_or_else(|| {
            SchedulerError::Noise(format!(
                "QueuedNoise is empty after {} tensors; queue one tensor per stochastic step",
                self.taken
            ))
        })?;
        if noise.shape() != shape {
            return Err(SchedulerError::Noise(format!(
                "queued noise #{} has shape {:?} but the step needs {shape:?}",
                self.taken,
                noise.shape()
            )));
        }
        self.taken += 1;
        Ok(noise.to_device(device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_normal() {
        let shape = Shape::from((4, 64, 64));
        let a = SeededNoise::new(7)
            .sample(&shape, DType::F32, &Device::Cpu)
            .unwrap();
        let b = SeededNoise::new(7)
            .sample(&shape, DType::F32, &Device::Cpu)
            .unwrap();
        let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb);
        let n = va.len() as f64;
        let mean = va.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = va.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
    }

    #[test]
    fn closures_and_queues_are_noise_sources() {
        let mut zeros =
            |shape: &Shape, dtype: DType, device: &Device| Tensor::zeros(shape, dtype, device);
        let t = zeros
            .sample(&Shape::from((2, 2)), DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(t.dims(), &[2, 2]);
        let mut queue = QueuedNoise::new([Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap()]);
        assert!(queue
            .sample(&Shape::from((3, 2)), DType::F32, &Device::Cpu)
            .is_err());
        let mut queue = QueuedNoise::new([Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap()]);
        queue
            .sample(&Shape::from((2, 2)), DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(queue.taken(), 1);
        assert!(NoNoise
            .sample(&Shape::from((2, 2)), DType::F32, &Device::Cpu)
            .is_err());
    }
}

/// Noise for a batch whose rows each have their own [`SeededNoise`] stream: asked for
/// `[n, …]`, it draws `[1, …]` from each of the `n` streams and stacks them. A batch then
/// gets, row for row, the numbers that one-at-a-time generation with those seeds gets,
/// for stochastic samplers too.
#[derive(Debug, Clone)]
pub struct PerRowNoise {
    rows: Vec<SeededNoise>,
}

impl PerRowNoise {
    /// One stream per seed.
    pub fn new(seeds: &[u64]) -> Self {
        Self {
            rows: seeds.iter().map(|&s| SeededNoise::new(s)).collect(),
        }
    }
}

impl NoiseSource for PerRowNoise {
    fn sample(&mut self, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        let dims = shape.dims();
        if dims.first() != Some(&self.rows.len()) {
            return Err(SchedulerError::Noise(format!(
                "noise of shape {dims:?} asked from {} per-row streams (the first dimension must be the row count)",
                self.rows.len()
            )));
        }
        let mut one = dims.to_vec();
        one[0] = 1;
        let one = Shape::from(one);
        let parts = self
            .rows
            .iter_mut()
            .map(|r| r.sample(&one, dtype, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
}
