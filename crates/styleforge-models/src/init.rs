//! Fresh, seeded weights initialised the way PyTorch initialises them, for models trained
//! from scratch and for benchmarks (no weights file needed).

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `VarBuilder` backend that creates every tensor the model asks for as a trainable
/// [`Var`] in a [`VarMap`], with PyTorch's default initialisation:
///
/// - matrices and kernels (`…weight`, 2+ dims): uniform ±1/√fan_in (PyTorch's
///   `kaiming_uniform_(a=√5)` for `Linear` and `Conv2d`);
/// - biases: uniform ±1/√fan_in of the layer when known, else ±0.02;
/// - 1-D `weight`s (norm scales): 1; other 1-D tensors: 0;
/// - embedding tables (`…embedding.weight`): normal(0, 0.02) as CLIP initialises them.
pub struct PyTorchInit {
    varmap: VarMap,
    rng: Mutex<ChaCha8Rng>,
    last_fan_in: Mutex<Option<usize>>,
}

impl PyTorchInit {
    /// A fresh initialiser registering into `varmap`, drawing from `seed`.
    pub fn new(varmap: &VarMap, seed: u64) -> Self {
        Self {
            varmap: varmap.clone(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            last_fan_in: Mutex::new(None),
        }
    }

    /// A `VarBuilder` over a fresh initialiser.
    pub fn var_builder(
        varmap: &VarMap,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Self::new(varmap, seed)), dtype, device.clone())
    }

    fn values(&self, shape: &Shape, name: &str) -> Vec<f32> {
        let dims = shape.dims();
        let n = shape.elem_count();
        let mut rng = self.rng.lock().expect("rng lock poisoned");
        let uniform = |rng: &mut ChaCha8Rng, bound: f32| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(-bound..=bound)).collect()
        };
        if name.ends_with("embedding.weight") {
            return (0..n).map(|_| normal(&mut rng) * 0.02).collect();
        }
        if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            *self.last_fan_in.lock().expect("lock poisoned") = Some(fan_in);
            return uniform(&mut rng, 1.0 / (fan_in as f32).sqrt());
        }
        if name.ends_with("bias") {
            let fan_in = self.last_fan_in.lock().expect("lock poisoned").take();
            return match fan_in {
                Some(f) => uniform(&mut rng, 1.0 / (f as f32).sqrt()),
                None => vec![0.0; n],
            };
        }
        if name.ends_with("weight") || name.ends_with("running_var") {
            // norm scales, and batch-norm variances as torch starts them
            return vec![1.0; n];
        }
        vec![0.0; n]
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

impl SimpleBackend for PyTorchInit {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "`{name}` asked for twice with shapes {s:?} and {:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = self.values(&s, name);
        let tensor = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock poisoned");
        match data.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("`{name}` has no shape to initialise it with"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("varmap lock poisoned")
            .contains_key(name)
    }
}
