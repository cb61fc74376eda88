//! Gradient (activation) checkpointing: a segment of the network keeps only its inputs
//! during the forward pass and is recomputed, with a graph, when backward reaches it.
//!
//! candle has no checkpointing of its own. Here a segment's forward runs normally and
//! its result is detached, so every intermediate activation is freed at once; the result
//! re-enters the graph through a custom op whose arguments are the segment's inputs.
//! When backward reaches that op, the op rebuilds the segment on fresh leaf copies of
//! its inputs, back-propagates `sum(out · grad_out)` through it, and hands the input
//! gradients back to candle's backward. The segment's parameters are leaves of that
//! inner graph: their gradients are collected on the side and merged by [`backward`],
//! which is the one call a checkpointed model needs instead of `Tensor::backward`.
//!
//! The recomputed forward performs the same operations on the same values, so the
//! gradients equal those without checkpointing up to the order in which a parameter's
//! contributions are summed. Segments must be deterministic (no dropout draws).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, Error, Layout, Result, Shape, Storage, Tensor, TensorId,
    Var,
};

thread_local! {
    /// Parameter gradients produced inside checkpointed segments during the current
    /// [`backward`] on this thread (candle's backward runs on the calling thread).
    static COLLECTOR: RefCell<Option<Grads>> = const { RefCell::new(None) };
}

/// Gradients by tensor id.
type Grads = HashMap<TensorId, Tensor>;

type SegmentFn = dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync;

/// Runs `segment` over `inputs` (one or two tensors) keeping only the inputs for backward.
///
/// `segment` receives tensors with the inputs' values and must compute the same function
/// each time it is called; whatever else it needs (parameters, constants such as masks)
/// it captures. Without any tracked tensor involved (inference) this is a plain call.
/// Gradients through the result need [`backward`].
pub fn checkpoint<F>(inputs: &[&Tensor], segment: F) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
{
    if inputs.is_empty() || inputs.len() > 2 {
        candle_core::bail!("checkpoint takes one or two inputs, got {}", inputs.len());
    }
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let out = segment(&detached)?;
    // A frozen segment still passes gradients from its output to tracked inputs.
    if !out.track_op() && !inputs.iter().any(|t| t.track_op()) {
        return Ok(out);
    }
    // The op's forward hands out this tensor's storage: it must be contiguous from offset 0
    // (an element-wise op writes a fresh, compact one).
    let mut out = out.detach();
    if !out.is_contiguous() || out.layout().start_offset() != 0 {
        out = out.affine(1.0, 0.0)?;
    }
    let first = inputs[0];
    // The third argument is a one-element variable: it makes the op a tracked node even
    // when no input is (frozen layers around trainable adapters inside the segment).
    let anchor = Var::zeros(1, first.dtype(), first.device())?;
    let second = inputs.get(1).copied().unwrap_or(anchor.as_tensor());
    let op = Segment {
        inputs: inputs.len(),
        out: Mutex::new(Some(out)),
        segment: Arc::new(segment),
    };
    first.apply_op3_arc(second, anchor.as_tensor(), Arc::new(Box::new(op)))
}

/// `loss.backward()` for graphs that may hold checkpointed segments: the gradients of
/// every variable, those used inside segments included, detached from the graph.
pub fn backward(loss: &Tensor) -> Result<GradStore> {
    let previous = COLLECTOR.with(|c| c.replace(Some(Grads::new())));
    let result = loss.backward();
    let side = COLLECTOR.with(|c| c.replace(previous));
    let mut grads = result?;
    for (id, g) in side.unwrap_or_default() {
        let sum = match grads.get_id(id) {
            Some(prev) => (prev + g)?,
            None => g,
        };
        grads.insert_id(id, sum);
    }
    // candle's gradients keep their own graph (a weight's gradient holds the activation it
    // was computed from): detached, every activation is freed once the loss is dropped.
    let ids: Vec<TensorId> = grads.get_ids().copied().collect();
    for id in ids {
        if let Some(g) = grads.get_id(id).filter(|g| g.track_op()) {
            let g = g.detach();
            grads.insert_id(id, g);
        }
    }
    Ok(grads)
}

/// Adds the gradients of `from` that belong to `variables` into `into`.
fn collect(into: &mut Grads, from: &GradStore, variables: &HashSet<TensorId>) -> Result<()> {
    for &id in from.get_ids().filter(|id| variables.contains(id)) {
        let Some(g) = from.get_id(id) else { continue };
        let sum = match into.remove(&id) {
            Some(prev) => (prev + g)?,
            None => g.clone(),
        };
        into.insert(id, sum.detach());
    }
    Ok(())
}

/// The custom op standing for one checkpointed segment.
struct Segment {
    /// How many of the op's first two arguments are real inputs (1 or 2).
    inputs: usize,
    /// The detached forward result, handed out (once) as the op's output.
    out: Mutex<Option<Tensor>>,
    segment: Arc<SegmentFn>,
}

impl Segment {
    fn take_out(&self) -> Result<Tensor> {
        self.out
            .lock()
            .map_err(|_| Error::msg("checkpoint: poisoned lock"))?
            .take()
            .ok_or_else(|| Error::msg("checkpoint: a segment's output was requested twice"))
    }
}

impl CustomOp3 for Segment {
    fn name(&self) -> &'static str {
        "checkpointed-segment"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = self.take_out()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("checkpoint: segment output is not on the CPU"),
        }
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = self.take_out()?;
        let (storage, layout) = out.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("checkpoint: segment output is not on the CUDA device"),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let args = [a, b];
        let mut leaves: Vec<Option<Var>> = Vec::with_capacity(self.inputs);
        let mut values: Vec<Tensor> = Vec::with_capacity(self.inputs);
        for arg in &args[..self.inputs] {
            if arg.track_op() {
                let var = Var::from_tensor(&arg.detach())?;
                values.push(var.as_tensor().clone());
                leaves.push(Some(var));
            } else {
                values.push(arg.detach());
                leaves.push(None);
            }
        }
        let out = (self.segment)(&values)?;
        drop(values);
        if !out.track_op() {
            return Ok((None, None, None));
        }
        let surrogate = (out * grad_res.detach())?.sum_all()?;
        // Backward also leaves gradients for untracked operands (`grad_res` itself, masks):
        // only the variables' are kept.
        let variables: HashSet<TensorId> = surrogate
            .sorted_nodes()
            .iter()
            .filter(|n| n.is_variable())
            .map(|n| n.id())
            .collect();
        let mut grads = surrogate.backward()?;
        let mut input_grads = leaves
            .iter()
            .map(|leaf| leaf.as_ref().and_then(|v| grads.remove(v.as_tensor())));
        // Gradients computed here still reference the recomputed activations through their
        // own graph; detached, the segment's activations are freed when this returns.
        let ga = input_grads.next().flatten().map(|g| g.detach());
        let gb = input_grads.next().flatten().map(|g| g.detach());
        COLLECTOR.with(|c| -> Result<()> {
            let mut c = c.borrow_mut();
            let Some(store) = c.as_mut() else {
                candle_core::bail!(
                    "a checkpointed segment was reached by Tensor::backward: call \
                     styleforge_models::nn::checkpoint::backward on graphs of models with \
                     gradient checkpointing"
                )
            };
            collect(store, &grads, &variables)
        })?;
        Ok((ga, gb, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    fn segment_fn(w: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let h = x.broadcast_matmul(w)?.tanh()?;
        (h.broadcast_mul(y)? + x)?.sqr()
    }

    #[test]
    fn gradients_equal_the_plain_graph() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::randn(0f32, 0.5, (6, 6), &dev)?;
        let w2 = Var::randn(0f32, 0.5, (6, 6), &dev)?;
        let x0 = Tensor::randn(0f32, 1.0, (3, 6), &dev)?;
        let y = Var::randn(0f32, 1.0, (3, 6), &dev)?;
        let run = |ckpt: bool| -> Result<GradStore> {
            let x = x0.matmul(w2.as_tensor())?;
            let h = if ckpt {
                let w = w.as_tensor().clone();
                checkpoint(&[&x, y.as_tensor()], move |i| segment_fn(&w, &i[0], &i[1]))?
            } else {
                segment_fn(w.as_tensor(), &x, y.as_tensor())?
            };
            // The segment's input is used again after it.
            let loss = (h.sum(D::Minus1)? * x.sum(D::Minus1)?)?.mean_all()?;
            backward(&loss)
        };
        let plain = run(false)?;
        let ckpt = run(true)?;
        let mut compared = 0;
        for v in [&w, &w2, &y] {
            let a = plain.get(v.as_tensor()).expect("plain grad");
            let b = ckpt.get(v.as_tensor()).expect("checkpointed grad");
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = a.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff <= 1e-6 * scale.max(1e-12), "{diff} vs {scale}");
            compared += 1;
        }
        assert_eq!(compared, 3);
        Ok(())
    }

    #[test]
    fn frozen_inputs_still_reach_segment_parameters() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::randn(0f32, 0.5, (4, 4), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 4), &dev)?;
        let wt = w.as_tensor().clone();
        let out = checkpoint(&[&x], move |i| i[0].matmul(&wt))?;
        let grads = backward(&out.sum_all()?)?;
        let g = grads.get(w.as_tensor()).expect("parameter gradient");
        let want = x.sum(0)?.unsqueeze(1)?.broadcast_as((4, 4))?;
        let diff = (g - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }

    #[test]
    fn frozen_segments_pass_gradients_through() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::randn(0f32, 0.5, (4, 4), &dev)?;
        let frozen = Tensor::randn(0f32, 0.5, (4, 4), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 4), &dev)?;
        let run = |ckpt: bool| -> Result<Tensor> {
            let h = x.matmul(w.as_tensor())?;
            let f = frozen.clone();
            let h = if ckpt {
                checkpoint(&[&h], move |i| i[0].matmul(&f)?.tanh())?
            } else {
                h.matmul(&f)?.tanh()?
            };
            let grads = backward(&h.sqr()?.sum_all()?)?;
            Ok(grads
                .get(w.as_tensor())
                .expect("gradient reaches w")
                .clone())
        };
        let diff = (run(false)? - run(true)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }

    #[test]
    fn plain_backward_is_refused_loudly() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::ones((2, 2), DType::F32, &dev)?;
        let x = Tensor::ones((1, 2), DType::F32, &dev)?;
        let wt = w.as_tensor().clone();
        let out = checkpoint(&[&x], move |i| i[0].matmul(&wt))?;
        let err = out.sum_all()?.backward().expect_err("must refuse");
        assert!(err.to_string().contains("checkpoint::backward"), "{err}");
        Ok(())
    }
}
