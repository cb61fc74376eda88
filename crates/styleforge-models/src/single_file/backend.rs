//! A `VarBuilder` backend over tensors already in memory (a converted single file), with
//! the same strict checks as [`crate::weights::WeightStore`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::ModelError;

/// Diffusers-named tensors of one component, handed to a model constructor.
pub(crate) struct MapStore {
    tensors: HashMap<String, Tensor>,
    origin: PathBuf,
    used: Mutex<HashSet<String>>,
    trainable: Option<VarMap>,
}

impl MapStore {
    pub fn new(
        tensors: HashMap<String, Tensor>,
        origin: PathBuf,
        trainable: Option<VarMap>,
    ) -> Self {
        Self {
            tensors,
            origin,
            used: Mutex::new(HashSet::new()),
            trainable,
        }
    }

    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Shared(Arc::clone(self))), dtype, device.clone())
    }

    /// Tensors nobody asked for, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().expect("store lock poisoned");
        let mut out: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        out.sort();
        out
    }

    fn fetch(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor, ModelError> {
        let stored = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: format!(
                    "{} (single-file checkpoint, converted)",
                    self.origin.display()
                ),
            })?;
        if let Some(shape) = shape {
            if stored.shape() != shape {
                return Err(ModelError::ShapeMismatch {
                    name: name.to_string(),
                    file: self.origin.display().to_string(),
                    expected: shape.dims().to_vec(),
                    found: stored.dims().to_vec(),
                });
            }
        }
        let tensor = stored.to_device(dev)?.to_dtype(dtype)?;
        self.used
            .lock()
            .expect("store lock poisoned")
            .insert(name.to_string());
        match &self.trainable {
            None => Ok(tensor),
            Some(varmap) => {
                let var = Var::from_tensor(&tensor)?;
                let out = var.as_tensor().clone();
                varmap
                    .data()
                    .lock()
                    .expect("varmap lock poisoned")
                    .insert(name.to_string(), var);
                Ok(out)
            }
        }
    }
}

struct Shared(Arc<MapStore>);

impl candle_nn::var_builder::SimpleBackend for Shared {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .fetch(name, Some(&s), dtype, dev)
            .map_err(ModelError::into_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0
            .fetch(name, None, dtype, dev)
            .map_err(ModelError::into_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}
