//! Strict safetensors loading: every tensor a model asks for must exist with the shape its
//! config implies, and every tensor the file holds but nobody asked for is reported.
//!
//! [`WeightStore`] is a candle `VarBuilder` backend. Built with [`WeightStore::frozen`] it hands
//! out plain tensors (memory-mapped, never written); built with [`WeightStore::trainable`] it
//! copies each tensor into a [`Var`] registered in a [`VarMap`], so the optimizer can update it
//! and the map can be saved under the same names. With [`WeightStore::with_casts`] as well
//! (mixed-precision training) the variables are f32 master weights and the model gets
//! copies in its compute dtype, kept in a [`CastCopies`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::error::{ModelError, Result};

/// One or more safetensors files seen as a single name → tensor map, handed to models
/// through a candle [`VarBuilder`].
pub struct WeightStore {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// Tensor name → index in `files`.
    index: HashMap<String, usize>,
    /// `(asked, stored)` rewrites tried in turn when a name is not found as asked; e.g.
    /// `("text_model.", "")` accepts CLIP weights saved without their `text_model.` prefix.
    aliases: Vec<(String, String)>,
    used: Mutex<HashSet<String>>,
    trainable: Option<VarMap>,
    casts: Option<CastCopies>,
}

/// Compute-dtype copies of f32 master variables, for mixed-precision training.
///
/// The model computes with the copies (bf16 or f16); each copy is its variable cast, so
/// the cast's backward hands the gradient to the variable in f32 and the optimizer updates
/// f32 weights. After every update, [`Self::refresh`] writes the variables' new values
/// into the copies in place, so a model built once keeps computing with current weights.
#[derive(Clone, Default)]
pub struct CastCopies {
    pairs: Arc<Mutex<Vec<(Var, Tensor)>>>,
}

impl CastCopies {
    /// An empty set, filled while a model is loaded.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, master: Var, copy: Tensor) {
        self.pairs
            .lock()
            .expect("cast copies lock poisoned")
            .push((master, copy));
    }

    /// Re-casts every master variable into its copy (after an optimizer update, a restore
    /// or an EMA swap).
    pub fn refresh(&self) -> Result<()> {
        let pairs = self.pairs.lock().expect("cast copies lock poisoned");
        for (master, copy) in pairs.iter() {
            let fresh = master.as_tensor().detach().to_dtype(copy.dtype())?;
            // Flattened views share the copy's storage: the write lands in the tensor the
            // model holds, whose cast op still links it to the master for backward.
            copy.flatten_all()?.slice_set(&fresh.flatten_all()?, 0, 0)?;
        }
        Ok(())
    }

    /// How many weights have a copy.
    pub fn len(&self) -> usize {
        self.pairs.lock().expect("cast copies lock poisoned").len()
    }

    /// Whether no weight has a copy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl WeightStore {
    /// Opens safetensors files for read-only use (the tensors are memory-mapped).
    pub fn frozen<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        Self::open(paths, None)
    }

    /// Opens safetensors files whose tensors become trainable [`Var`]s, registered in
    /// `varmap` under the names the model asks for.
    pub fn trainable<P: AsRef<Path>>(paths: &[P], varmap: &VarMap) -> Result<Self> {
        Self::open(paths, Some(varmap.clone()))
    }

    fn open<P: AsRef<Path>>(paths: &[P], trainable: Option<VarMap>) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let path = path.as_ref().to_path_buf();
            if let Err(source) = std::fs::metadata(&path) {
                return Err(ModelError::Io { path, source });
            }
            // SAFETY: the file is mapped read-only; like every mmap user we assume nobody
            // truncates it while it is open.
            let mmap = unsafe { MmapedSafetensors::new(&path) }.map_err(|e| {
                ModelError::InvalidWeights {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
            for (name, _) in mmap.tensors() {
                index.insert(name, i);
            }
            files.push((path, mmap));
        }
        Ok(Self {
            files,
            index,
            aliases: Vec::new(),
            used: Mutex::new(HashSet::new()),
            trainable,
            casts: None,
        })
    }

    /// Mixed precision for a trainable store: the variables are created in f32 and a model
    /// asking for another float dtype gets cast copies, recorded in `casts`.
    pub fn with_casts(mut self, casts: CastCopies) -> Self {
        self.casts = Some(casts);
        self
    }

    /// The dtype a tensor the model asks for in `dtype` is read in: f32 for the master
    /// variables of a mixed-precision store, else `dtype`.
    fn read_dtype(&self, dtype: DType) -> DType {
        match (&self.trainable, &self.casts) {
            (Some(_), Some(_)) if dtype.is_float() => DType::F32,
            _ => dtype,
        }
    }

    /// Also accepts a tensor whose name contains `asked` when the file stores it with
    /// `stored` in its place (first occurrence).
    pub fn with_alias(mut self, asked: &str, stored: &str) -> Self {
        self.aliases.push((asked.to_string(), stored.to_string()));
        self
    }

    /// The names of every tensor in the files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The files behind this store.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    fn files_label(&self) -> String {
        let names: Vec<String> = self.paths().map(|p| p.display().to_string()).collect();
        names.join(", ")
    }

    /// Finds the stored name for a tensor a model asks for.
    fn resolve(&self, name: &str) -> Option<String> {
        if self.index.contains_key(name) {
            return Some(name.to_string());
        }
        self.aliases.iter().find_map(|(asked, stored)| {
            if !name.contains(asked.as_str()) {
                return None;
            }
            let candidate = name.replacen(asked.as_str(), stored, 1);
            self.index.contains_key(&candidate).then_some(candidate)
        })
    }

    /// Tensors in the files that no model asked for, sorted. After a model is built these
    /// are usually a sign that the config and the weights disagree.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().expect("weight store lock poisoned");
        let mut unused: Vec<String> = self
            .index
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        unused.sort();
        unused
    }

    /// Loads one tensor as stored (any float dtype), converted to `dtype`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let stored = self
            .resolve(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                files: self.files_label(),
            })?;
        let (path, mmap) = &self.files[self.index[&stored]];
        let view = mmap.get(&stored).map_err(|e| ModelError::InvalidWeights {
            path: path.clone(),
            reason: format!("tensor `{stored}`: {e}"),
        })?;
        use safetensors::Dtype as Stored;
        if !matches!(
            view.dtype(),
            Stored::F16 | Stored::BF16 | Stored::F32 | Stored::F64
        ) {
            return Err(ModelError::InvalidWeights {
                path: path.clone(),
                reason: format!(
                    "tensor `{stored}` is stored as {:?}; model weights must be floating point \
                     (f16, bf16, f32 or f64) — the file is not a model of this kind or was \
                     converted wrongly",
                    view.dtype()
                ),
            });
        }
        let tensor = load_mapped(&view, device).map_err(|e| ModelError::InvalidWeights {
            path: path.clone(),
            reason: format!("tensor `{stored}`: {e}"),
        })?;
        self.used
            .lock()
            .expect("weight store lock poisoned")
            .insert(stored);
        Ok(tensor.to_dtype(dtype)?)
    }

    fn load_checked(
        &self,
        shape: &Shape,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != shape {
            let stored = self.resolve(name).unwrap_or_else(|| name.to_string());
            let file = self.files[self.index[&stored]].0.display().to_string();
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                file,
                expected: shape.dims().to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        Ok(tensor)
    }

    fn hand_out(&self, name: &str, tensor: Tensor, dtype: DType) -> Result<Tensor> {
        match &self.trainable {
            None => Ok(tensor),
            Some(varmap) => {
                let var = Var::from_tensor(&tensor)?;
                let out = match &self.casts {
                    Some(casts) if var.dtype() != dtype => {
                        let copy = var.as_tensor().to_dtype(dtype)?;
                        casts.add(var.clone(), copy.clone());
                        copy
                    }
                    _ => var.as_tensor().clone(),
                };
                varmap
                    .data()
                    .lock()
                    .expect("varmap lock poisoned")
                    .insert(name.to_string(), var);
                Ok(out)
            }
        }
    }

    /// A `VarBuilder` over this store. Models take the tensors in `dtype` on `device`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(SharedStore(Arc::clone(self))),
            dtype,
            device.clone(),
        )
    }
}

/// Copies a tensor of a mapped safetensors file onto `device`, then lets the mapped pages
/// it was read from go: the file's pages would otherwise stay resident beside the copies
/// until the file is closed, and loading a model would take twice its size at the end (the
/// whole UNet file beside the UNet). The pages stay in the OS's file cache, and a second
/// read of the tensor maps them again.
pub(crate) fn load_mapped(
    view: &safetensors::tensor::TensorView<'_>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let tensor = view.load(device)?;
    release_mapped_pages(view.data());
    Ok(tensor)
}

/// Drops the whole pages inside `bytes`, a part of a read-only file mapping, from this
/// process's resident memory (`madvise(MADV_DONTNEED)`); nothing off Unix.
fn release_mapped_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads a system value.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => return,
        };
        let start = bytes.as_ptr() as usize;
        let first = start.div_ceil(page) * page;
        let end = (start + bytes.len()) / page * page;
        if end > first {
            // SAFETY: [first, end) lies inside `bytes`, which a read-only, never-written file
            // mapping holds: its dropped pages are read back from the file, unchanged, if
            // touched again. A failure only leaves the pages resident.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// The `VarBuilder` backend: a shared handle, so the store can still be asked for
/// [`WeightStore::unused`] after the model is built.
struct SharedStore(Arc<WeightStore>);

impl candle_nn::var_builder::SimpleBackend for SharedStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self
            .0
            .load_checked(&s, name, self.0.read_dtype(dtype), dev)
            .map_err(ModelError::into_candle)?;
        self.0
            .hand_out(name, tensor, dtype)
            .map_err(ModelError::into_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self
            .0
            .load(name, self.0.read_dtype(dtype), dev)
            .map_err(ModelError::into_candle)?;
        self.0
            .hand_out(name, tensor, dtype)
            .map_err(ModelError::into_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.resolve(name).is_some()
    }
}

/// Refuses weights holding NaN or infinite values: every floating-point tensor of `paths`
/// is read (on the CPU, one at a time) and the first one with a non-finite value is named
/// with its file. Training from such weights would only report a NaN loss at its first step.
pub fn check_finite<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    let store = WeightStore::frozen(paths)?;
    let mut names: Vec<&String> = store.index.keys().collect();
    names.sort();
    for name in names {
        let tensor = store.load(name, DType::F32, &Device::Cpu)?;
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        let nan = values.iter().filter(|v| v.is_nan()).count();
        let inf = values.iter().filter(|v| v.is_infinite()).count();
        if nan + inf > 0 {
            let (path, _) = &store.files[store.index[name]];
            return Err(ModelError::NonFiniteWeights {
                path: path.clone(),
                name: name.to_string(),
                nan,
                infinite: inf,
                count: values.len(),
            });
        }
    }
    Ok(())
}

/// The weights file(s) of one diffusers component folder (`unet/`, `vae/`, `text_encoder/`).
///
/// Looks for `<stem>.safetensors` (or the `<stem>.<variant>.safetensors` variant, e.g. `fp16`),
/// for a sharded `<stem>.safetensors.index.json`, and for the `model.safetensors` /
/// `diffusion_pytorch_model.safetensors` stems transformers and diffusers use. A component
/// without files of the asked variant falls back to its plain files (with a warning), as
/// diffusers does for repos whose variant covers only some components.
pub fn component_weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut tried = Vec::new();
    if let Some(v) = variant {
        if let Some(files) = find_weight_files(dir, &format!(".{v}.safetensors"), &mut tried)? {
            return Ok(files);
        }
    }
    if let Some(files) = find_weight_files(dir, ".safetensors", &mut tried)? {
        if let Some(v) = variant {
            tracing::warn!(
                "{}: no `{v}` variant weights, using the plain ones ({})",
                dir.display(),
                files[0].display()
            );
        }
        return Ok(files);
    }
    Err(ModelError::NoWeights {
        dir: dir.to_path_buf(),
        expected: tried.join(" or "),
    })
}

/// The single or sharded weight files of `dir` whose names end in `suffix`, if any; the
/// names looked for are added to `tried`.
fn find_weight_files(
    dir: &Path,
    suffix: &str,
    tried: &mut Vec<String>,
) -> Result<Option<Vec<PathBuf>>> {
    const STEMS: [&str; 2] = ["diffusion_pytorch_model", "model"];
    for stem in STEMS {
        let single = dir.join(format!("{stem}{suffix}"));
        if single.is_file() {
            return Ok(Some(vec![single]));
        }
        tried.push(format!("{stem}{suffix}"));
        let index = dir.join(format!("{stem}{suffix}.index.json"));
        if index.is_file() {
            return sharded_files(&index).map(Some);
        }
    }
    Ok(None)
}

/// The shard files named by a `*.safetensors.index.json` (its `weight_map`).
fn sharded_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            path: index.to_path_buf(),
            message: "no `weight_map` object".to_string(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Writes tensors to a safetensors file atomically: to a temporary file beside `path`,
/// then renamed over it, so a crash never leaves a half-written file.
pub fn save_safetensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::files::write_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| match e {
            // A failed write (a full disk, say) names the file it was writing.
            candle_core::Error::Io(source)
            | candle_core::Error::SafeTensor(safetensors::SafeTensorError::IoError(source)) => {
                crate::files::FileError::new(path, source).into()
            }
            other => ModelError::from(other),
        })
    })
}

/// The trainable variables of a [`VarMap`] as a name → tensor map, ready to save.
pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_read_again_after_their_pages_are_let_go() -> Result<()> {
        let dev = Device::Cpu;
        let path = std::env::temp_dir().join(format!(
            "styleforge-released-pages-{}.safetensors",
            std::process::id()
        ));
        // Several pages each, and a small one between them, so that page boundaries fall
        // inside tensors.
        let values = |n: usize, k: f32| (0..n).map(|i| i as f32 * k).collect::<Vec<f32>>();
        let tensors = HashMap::from([
            ("a".to_string(), Tensor::new(values(5000, 0.5), &dev)?),
            ("b".to_string(), Tensor::new(values(3, -1.0), &dev)?),
            ("c".to_string(), Tensor::new(values(9000, 0.25), &dev)?),
        ]);
        save_safetensors_atomic(&tensors, &path)?;
        let store = WeightStore::frozen(&[&path])?;
        for _ in 0..2 {
            for (name, expected) in &tensors {
                let got = store.load(name, DType::F32, &dev)?;
                assert_eq!(got.to_vec1::<f32>()?, expected.to_vec1::<f32>()?, "{name}");
            }
        }
        drop(store);
        std::fs::remove_file(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(())
    }

    #[test]
    fn cast_copies_pass_f32_gradients_and_follow_their_masters() -> Result<()> {
        let dev = Device::Cpu;
        let path = std::env::temp_dir().join(format!(
            "styleforge-cast-copies-{}.safetensors",
            std::process::id()
        ));
        let w = Tensor::new(&[1.5f32, -2.0, 0.25], &dev)?;
        save_safetensors_atomic(&HashMap::from([("w".to_string(), w)]), &path)?;
        let varmap = VarMap::new();
        let casts = CastCopies::new();
        let store = WeightStore::trainable(&[&path], &varmap)?.with_casts(casts.clone());
        let vb = Arc::new(store).var_builder(DType::BF16, &dev);
        let copy = vb.get(3, "w")?;
        std::fs::remove_file(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        assert_eq!(copy.dtype(), DType::BF16);
        assert_eq!(casts.len(), 1);
        let master = varmap.data().lock().expect("varmap")["w"].clone();
        assert_eq!(master.dtype(), DType::F32);
        // The gradient of a bf16 computation reaches the master in f32.
        let grads = (&copy * 3.0)?.sum_all()?.backward()?;
        let g = grads.get(master.as_tensor()).expect("master gradient");
        assert_eq!(g.dtype(), DType::F32);
        assert_eq!(g.to_vec1::<f32>()?, vec![3.0; 3]);
        // An update of the master reaches the copy the model holds.
        master.set(&Tensor::new(&[0.5f32, 4.0, -1.0], &dev)?)?;
        casts.refresh()?;
        let seen = copy.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        assert_eq!(seen, vec![0.5, 4.0, -1.0]);
        // ... and the copy is still tied to it for the next backward.
        let grads = copy.sum_all()?.backward()?;
        assert!(grads.get(master.as_tensor()).is_some());
        Ok(())
    }
}
