//! The one training loop. Fine-tuning (every method of [`super::engine`]) and pretraining
//! ([`super::pretrain`]) are [`TrainTask`]s: they say what is trained and how a micro-batch
//! becomes a loss; [`RunLoop`] owns the rest — the optimizer and its learning-rate plan,
//! gradient accumulation and clipping, fp16 loss scaling ([`super::precision`]), the
//! non-finite-loss stop, the JSONL log, periodic checkpoints and pictures, exact resume
//! (weights, optimizer, loss scale, the run's generator and the tasks' samplers all come
//! back from the checkpoint), and the early stop between steps ([`super::stop`]): a raised
//! [`StopSignal`], a spent time budget or a step limit ends the sitting with a checkpoint
//! of its last step and a `stopped.json` record.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use styleforge_models::nn::checkpoint::backward as checkpointed_backward;

use super::checkpoint::{self, TrainState};
use super::ema::{Ema, EmaConfig};
use super::log::{LogEntry, LogWriter};
use super::lr::LrPlan;
use super::memory::peak_rss_bytes;
use super::precision::{LossScaleConfig, LossScaler, Unscaled};
use super::step::{clip_grad_norm, LossParts};
use super::stop::{StopReason, StopRecord, StopSignal};
use crate::data::{RngState, SamplerState};
use crate::error::{Error, Result};
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::{Progress, StepReport};
use crate::run_dir::RunDir;

/// A standard normal tensor from `rng` (Box-Muller, both values of each pair used): every
/// noise draw of training goes through this, so a resumed generator continues exactly.
pub fn normal(rng: &mut ChaCha8Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f32 = 1.0 - rng.gen::<f32>();
        let u2: f32 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f32::consts::PI * u2;
        values.push(r * a.cos());
        values.push(r * a.sin());
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// The weights a checkpoint holds: the UNet's (or an adapter's) variables and, when it is
/// trained, the text encoder's.
pub struct TrainedWeights<'a> {
    /// UNet (or adapter) variables.
    pub unet: &'a VarMap,
    /// Text-encoder variables, when they are trained.
    pub text_encoder: Option<&'a VarMap>,
}

/// What a training method provides to [`RunLoop`].
pub trait TrainTask {
    /// The loss of one micro-batch of the optimizer step that follows `steps_done`; every
    /// random draw comes from `rng` (the run's generator, checkpointed by the loop).
    fn loss(&mut self, steps_done: usize, rng: &mut ChaCha8Rng) -> Result<LossParts>;

    /// Called after every optimizer update and after a restore (adapter methods rebuild
    /// their models from the updated variables).
    fn after_update(&mut self) -> Result<()> {
        Ok(())
    }

    /// The trained weights, as checkpoints hold them.
    fn weights(&self) -> TrainedWeights<'_>;

    /// The data samplers' states: the main one and any others (one Aux sampler per concept).
    fn samplers(&self) -> (SamplerState, Vec<SamplerState>);

    /// Restores the samplers from a checkpoint.
    fn restore_samplers(&mut self, main: SamplerState, others: Vec<SamplerState>) -> Result<()>;

    /// Whether [`Self::after_checkpoint`] writes outputs: only then is it called, with the
    /// EMA weights in place when the run keeps an EMA (swapping them in copies every
    /// trained weight, not worth doing for nothing).
    const WRITES_AT_CHECKPOINTS: bool = false;

    /// Writes outputs after each periodic checkpoint at `step` (see
    /// [`Self::WRITES_AT_CHECKPOINTS`]).
    fn after_checkpoint(&mut self, _step: usize) -> Result<()> {
        Ok(())
    }

    /// The validation loss of the current weights (`None`: the task has no validation set).
    fn validation_loss(&mut self) -> Result<Option<f64>> {
        Ok(None)
    }

    /// The periodic pictures (validation or sample grids) at `step`.
    fn pictures(&mut self, _step: usize) -> Result<()> {
        Ok(())
    }
}

/// How [`RunLoop`] trains.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Optimizer steps of the whole run (the learning-rate plan and the periodic outputs
    /// refer to it).
    pub total_steps: usize,
    /// Micro-batches per optimizer step (gradients summed, each loss divided by this).
    pub gradient_accumulation: usize,
    /// Global gradient-norm clip (0: off; the norm is still logged).
    pub max_grad_norm: f64,
    /// The learning rate of every step.
    pub lr: LrPlan,
    /// A checkpoint every this many steps (0: only when a sitting stops early).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Pictures every this many steps (0: never); the last step's are left to the caller.
    pub pictures_every: usize,
    /// The validation loss every this many steps and at the last (0: never).
    pub validation_loss_every: usize,
    /// Seed of the run's generator.
    pub seed: u64,
    /// A moving average of the trained weights (`None`: none kept).
    pub ema: Option<EmaConfig>,
    /// The progress label ("training", "pretrain").
    pub label: &'static str,
    /// Dynamic loss scaling (fp16 training); `None`: the loss is not scaled.
    pub loss_scaling: Option<LossScaleConfig>,
    /// Read between steps: once raised, the sitting ends after the step in progress, with
    /// a checkpoint.
    pub stop: StopSignal,
}

/// What one sitting of [`RunLoop::run`] did.
#[derive(Debug, Clone, Copy)]
pub struct Sitting {
    /// Optimizer steps done in this sitting.
    pub steps: usize,
    /// Loss of the last step (NaN when none ran).
    pub last_loss: f64,
    /// Wall-clock seconds of the sitting.
    pub seconds: f64,
    /// Why the sitting ended before the run's last step (`None`: it reached it).
    pub stopped: Option<StopReason>,
}

/// A training run in progress: the task, the optimizer over its variables, the generator
/// and the step count.
pub struct RunLoop<T: TrainTask> {
    task: T,
    settings: LoopSettings,
    run: RunDir,
    optimizer: AdamW,
    vars: Vec<Var>,
    rng: ChaCha8Rng,
    step: usize,
    device: Device,
    ema: Option<Ema>,
    scaler: Option<LossScaler>,
    /// The step of the newest checkpoint this process restored or wrote: a sitting that
    /// ends at that step need not write it again.
    checkpointed: Option<usize>,
}

impl<T: TrainTask> RunLoop<T> {
    /// A run over the variables `named` (their order is the order of clipping's norm sum),
    /// writing into `run`.
    pub fn new(
        task: T,
        named: Vec<(String, Var)>,
        adamw: AdamWConfig,
        settings: LoopSettings,
        run: RunDir,
        device: &Device,
    ) -> Result<Self> {
        let vars = named.iter().map(|(_, v)| v.clone()).collect();
        let ema = settings.ema.map(|c| Ema::new(c, &named)).transpose()?;
        let scaler = settings.loss_scaling.map(LossScaler::new);
        Ok(Self {
            ema,
            scaler,
            task,
            optimizer: AdamW::new(named, adamw)?,
            vars,
            rng: ChaCha8Rng::seed_from_u64(settings.seed),
            step: 0,
            settings,
            run,
            device: device.clone(),
            checkpointed: None,
        })
    }

    /// Optimizer steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The run folder.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Whether the run keeps a moving average of its weights.
    pub fn has_ema(&self) -> bool {
        self.ema.is_some()
    }

    /// Runs `f` with the moving average in place of the trained weights (the weights come
    /// back afterwards); without an EMA, on the weights themselves.
    pub fn with_ema_weights<R>(&mut self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let Some(ema) = &self.ema else {
            return f(&mut self.task);
        };
        let saved = ema.swap_in()?;
        self.task.after_update()?;
        let result = f(&mut self.task);
        ema.restore(saved)?;
        self.task.after_update()?;
        result
    }

    /// Replaces the trained weights by their moving average for good (the end of a run
    /// whose output is the EMA); nothing happens without an EMA.
    pub fn apply_ema(&mut self) -> Result<()> {
        if let Some(ema) = &self.ema {
            ema.swap_in()?;
            self.task.after_update()?;
        }
        Ok(())
    }

    /// Resumes from the newest checkpoint (`resume`), or checks that the run folder holds
    /// none (a second run into a folder would mix two runs' checkpoints).
    pub fn start(&mut self, resume: bool) -> Result<()> {
        let dir = self.run.checkpoints();
        let found = checkpoint::list(&dir);
        if !resume {
            if !found.is_empty() {
                return Err(Error::RunFolder {
                    path: dir,
                    message: "already holds checkpoints: pass --resume to continue that run, or choose another output folder".into(),
                });
            }
            return Ok(());
        }
        let Some((_, latest)) = found.into_iter().next_back() else {
            return Err(Error::RunFolder {
                path: dir,
                message: "--resume: no checkpoint here; start the run without --resume".into(),
            });
        };
        self.restore(&latest)?;
        tracing::info!("resuming from {} (step {})", latest.display(), self.step);
        Ok(())
    }

    fn restore(&mut self, path: &std::path::Path) -> Result<()> {
        let loaded = checkpoint::load(path, &self.device)?;
        let weights = self.task.weights();
        checkpoint::restore_vars(weights.unet, &loaded.unet, "UNet")?;
        match (weights.text_encoder, &loaded.text_encoder) {
            (Some(vars), Some(t)) => checkpoint::restore_vars(vars, t, "text-encoder")?,
            (None, None) => {}
            (mine, _) => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "it {} text-encoder weights but this run {} the text encoder; resume with the config that made it",
                        if mine.is_some() { "has no" } else { "holds" },
                        if mine.is_some() { "trains" } else { "does not train" },
                    ),
                })
            }
        }
        self.optimizer.load_state(&loaded.optimizer)?;
        match (&mut self.ema, &loaded.ema) {
            (Some(ema), Some(file)) => ema.load_state(file, path)?,
            (Some(_), None) => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: "it holds no EMA weights but this run keeps an EMA (ema_decay); resume with the config that made it".into(),
                })
            }
            (None, Some(_)) => tracing::warn!(
                "{} holds EMA weights but this run keeps none; they are ignored",
                path.display()
            ),
            (None, None) => {}
        }
        match (&mut self.scaler, loaded.state.loss_scale) {
            (Some(scaler), Some(state)) => scaler.restore(state),
            (Some(scaler), None) => tracing::warn!(
                "{} holds no loss scale (a run without fp16); loss scaling starts at {}",
                path.display(),
                scaler.scale()
            ),
            (None, Some(_)) => tracing::warn!(
                "{} holds a loss scale but this run does not scale its loss (not fp16); it is ignored",
                path.display()
            ),
            (None, None) => {}
        }
        self.task.after_update()?;
        self.rng = loaded.state.rng.restore();
        self.task
            .restore_samplers(loaded.state.style_sampler, loaded.state.aux_samplers)?;
        self.step = loaded.state.step;
        self.checkpointed = Some(self.step);
        Ok(())
    }

    /// Writes a checkpoint of the current step (keeping the newest `keep_checkpoints`). A
    /// write that fails leaves the checkpoints before it as they were and returns
    /// [`Error::OutputWrite`].
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = checkpoint::checkpoint_dir(&self.run.checkpoints(), self.step);
        tracing::info!("writing checkpoint {}", dir.display());
        let start = Instant::now();
        let written = self
            .write_checkpoint()
            .map_err(|e| checkpoint::write_failed("checkpoint", &dir, &self.run, e))?;
        tracing::info!(
            "checkpoint written: {} ({:.1} s)",
            written.display(),
            start.elapsed().as_secs_f64()
        );
        self.checkpointed = Some(self.step);
        Ok(written)
    }

    fn write_checkpoint(&self) -> Result<PathBuf> {
        let (main, others) = self.task.samplers();
        let state = TrainState {
            step: self.step,
            rng: RngState::capture(&self.rng),
            style_sampler: main,
            aux_samplers: others,
            loss_scale: self.scaler.as_ref().map(LossScaler::state),
        };
        let weights = self.task.weights();
        checkpoint::save(
            &self.run.checkpoints(),
            &state,
            weights.unet,
            weights.text_encoder,
            &self.optimizer,
            self.ema.as_ref(),
            self.settings.keep_checkpoints,
        )
    }

    /// One optimizer step over `gradient_accumulation` micro-batches. With loss scaling,
    /// a step whose gradients overflow updates nothing (weights, optimizer, EMA) and is
    /// logged as skipped.
    pub fn train_step(&mut self) -> Result<LogEntry> {
        let start = Instant::now();
        let accum = self.settings.gradient_accumulation.max(1);
        let loss_scale = self.scaler.as_ref().map(LossScaler::scale);
        let mut grads_sum: Option<GradStore> = None;
        let (mut loss_sum, mut inst_sum, mut prior_sum) = (0.0, 0.0, 0.0);
        for _ in 0..accum {
            let loss = self.task.loss(self.step, &mut self.rng)?;
            let value = loss.total.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: self.step + 1,
                    value,
                });
            }
            loss_sum += value;
            inst_sum += loss.instance;
            prior_sum += loss.prior;
            let mut total = loss.total;
            if accum > 1 {
                total = (total / accum as f64)?;
            }
            // fp16: the f32 loss is scaled before backward, so that small gradients stay
            // above f16's smallest values on their way down.
            if let Some(scale) = loss_scale {
                total = (total * scale)?;
            }
            let grads = checkpointed_backward(&total)?;
            grads_sum = Some(match grads_sum {
                None => grads,
                Some(acc) => self.add_grads(acc, &grads)?,
            });
        }
        let mut grads = grads_sum.expect("at least one micro-batch");
        let found = match &self.scaler {
            Some(scaler) => scaler.unscale(&mut grads, &self.vars)?,
            None => Unscaled::Finite,
        };
        if let Some(scaler) = &mut self.scaler {
            scaler.update(found);
        }
        let lr = self.settings.lr.at(self.step + 1);
        let n = accum as f64;
        let mut entry = LogEntry {
            step: self.step + 1,
            loss: loss_sum / n,
            loss_instance: inst_sum / n,
            loss_prior: prior_sum / n,
            grad_norm: f64::NAN,
            lr,
            step_time_s: 0.0,
            val_loss: None,
            loss_scale,
            skipped: found == Unscaled::Overflow,
        };
        if entry.skipped {
            tracing::info!(
                "step {}: the gradients overflowed at loss scale {}; step skipped, scale now {}",
                entry.step,
                loss_scale.unwrap_or(1.0),
                self.scaler.as_ref().map_or(1.0, LossScaler::scale)
            );
        } else {
            // With clipping off (max_grad_norm 0) the norm is still measured for the log.
            let max_norm = if self.settings.max_grad_norm > 0.0 {
                self.settings.max_grad_norm
            } else {
                f64::INFINITY
            };
            entry.grad_norm = clip_grad_norm(&mut grads, &self.vars, max_norm)?;
            self.optimizer.set_lr(lr);
            self.optimizer.step(&grads)?;
            if let Some(ema) = &mut self.ema {
                ema.update()?;
            }
            self.task.after_update()?;
        }
        self.step += 1;
        entry.step_time_s = start.elapsed().as_secs_f64();
        Ok(entry)
    }

    fn add_grads(&self, mut acc: GradStore, grads: &GradStore) -> Result<GradStore> {
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let sum = match acc.remove(var.as_tensor()) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                acc.insert(var.as_tensor(), sum);
            }
        }
        Ok(acc)
    }

    /// Trains until step `end`, `deadline` or a raised [`LoopSettings::stop`], appending to
    /// the log and writing the periodic checkpoints and pictures (none at the run's last
    /// step: what ends a run is the caller's). A sitting that ends before the run's last
    /// step leaves a checkpoint of its last step and a [`StopRecord`]; a stop is not an
    /// error, [`Sitting::stopped`] says why the sitting ended.
    pub fn run(
        &mut self,
        end: usize,
        deadline: Option<Instant>,
        progress: &mut dyn Progress,
    ) -> Result<Sitting> {
        let sitting = Instant::now();
        let first = self.step;
        let total = self.settings.total_steps;
        let end = end.min(total);
        let mut log = LogWriter::open(&self.run.log(), self.step)?;
        // This sitting trains on: an earlier sitting's stop no longer describes the run.
        StopRecord::clear(&self.run)?;
        let mut last_loss = f64::NAN;
        let mut stopped = None;
        if self.step < end {
            tracing::info!("training steps {} to {end} of {total}", self.step + 1);
        }
        progress.begin(self.settings.label, end.saturating_sub(self.step));
        while self.step < end {
            if self.settings.stop.is_requested() {
                tracing::info!("stop requested at step {}", self.step);
                stopped = Some(StopReason::Requested);
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::info!(
                    "the time budget is spent at step {}; stopping with a checkpoint",
                    self.step
                );
                stopped = Some(StopReason::TimeBudget);
                break;
            }
            tracing::debug!("step {} begins", self.step + 1);
            self.settings.stop.set_training_step(Some(self.step + 1));
            let mut entry = self.train_step()?;
            let every_val = self.settings.validation_loss_every;
            if every_val > 0 && (self.step.is_multiple_of(every_val) || self.step == total) {
                entry.val_loss = self.task.validation_loss()?;
            }
            last_loss = entry.loss;
            log.append(&entry)?;
            tracing::debug!("step {} done", entry.step);
            progress.advance(1);
            progress.step(&StepReport {
                step: entry.step,
                total: end,
                loss: entry.loss,
                lr: entry.lr,
                step_time_s: entry.step_time_s,
                peak_memory_bytes: peak_rss_bytes(),
                loss_scale: entry.loss_scale,
                skipped: entry.skipped,
            });
            let step = self.step;
            let every = |n: usize| n > 0 && step.is_multiple_of(n) && step < total;
            // The step's pictures before its checkpoint: a run killed in between resumes
            // from the checkpoint before and makes them again; the other way round, a
            // resume from this step's checkpoint would never make them.
            if every(self.settings.pictures_every) {
                self.with_ema_weights(|task| task.pictures(step))?;
            }
            if every(self.settings.checkpoint_every) {
                self.save_checkpoint()?;
                if T::WRITES_AT_CHECKPOINTS {
                    self.with_ema_weights(|task| task.after_checkpoint(step))?;
                }
            }
        }
        self.settings.stop.set_training_step(None);
        progress.finish();
        // Short of the run's last step without a stop or a spent budget: `end` came first.
        let stopped = (self.step < total).then(|| stopped.unwrap_or(StopReason::StepLimit));
        if let Some(reason) = stopped {
            // A stop right after a periodic checkpoint (or before the first step of a
            // resumed sitting) finds the step's checkpoint already written.
            if self.checkpointed != Some(self.step) {
                self.save_checkpoint()?;
            }
            StopRecord {
                step: self.step,
                reason,
            }
            .write(&self.run)?;
            if reason == StopReason::Requested {
                tracing::info!("stopped at step {} with a checkpoint", self.step);
            }
        }
        Ok(Sitting {
            steps: self.step - first,
            last_loss,
            seconds: sitting.elapsed().as_secs_f64(),
            stopped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::EpochSampler;
    use crate::progress::NoProgress;
    use candle_core::DType;

    /// One weight pulled towards noise; its pictures fail at `fail_at`, as a run killed
    /// while drawing them.
    struct Pull {
        vars: VarMap,
        w: Var,
        sampler: EpochSampler,
        pictures: Vec<usize>,
        fail_at: Option<usize>,
    }

    impl Pull {
        fn new(fail_at: Option<usize>) -> Self {
            let vars = VarMap::new();
            vars.get(
                2,
                "w",
                candle_nn::Init::Const(0.5),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            let w = vars.data().lock().unwrap()["w"].clone();
            Self {
                vars,
                w,
                sampler: EpochSampler::new(3, 1).unwrap(),
                pictures: Vec::new(),
                fail_at,
            }
        }
    }

    impl TrainTask for Pull {
        fn loss(&mut self, _steps_done: usize, rng: &mut ChaCha8Rng) -> Result<LossParts> {
            self.sampler.next_index();
            let target = normal(rng, &[2], &Device::Cpu)?;
            let total = (self.w.as_tensor() - target)?.sqr()?.sum_all()?;
            let instance = total.to_scalar::<f32>()? as f64;
            Ok(LossParts {
                total,
                instance,
                prior: 0.0,
            })
        }

        fn weights(&self) -> TrainedWeights<'_> {
            TrainedWeights {
                unet: &self.vars,
                text_encoder: None,
            }
        }

        fn samplers(&self) -> (SamplerState, Vec<SamplerState>) {
            (self.sampler.state(), Vec::new())
        }

        fn restore_samplers(&mut self, main: SamplerState, _: Vec<SamplerState>) -> Result<()> {
            self.sampler = EpochSampler::from_state(main)?;
            Ok(())
        }

        fn pictures(&mut self, step: usize) -> Result<()> {
            if self.fail_at == Some(step) {
                return Err(Error::msg("killed while drawing"));
            }
            self.pictures.push(step);
            Ok(())
        }
    }

    fn run_loop(task: Pull, run: &RunDir) -> RunLoop<Pull> {
        let settings = LoopSettings {
            total_steps: 8,
            gradient_accumulation: 1,
            max_grad_norm: 0.0,
            lr: LrPlan::new(1e-2, 0, 8, Default::default()),
            checkpoint_every: 2,
            keep_checkpoints: 2,
            pictures_every: 4,
            validation_loss_every: 0,
            seed: 3,
            ema: None,
            loss_scaling: None,
            label: "training",
            stop: StopSignal::new(),
        };
        let named = vec![("w".to_string(), task.w.clone())];
        RunLoop::new(
            task,
            named,
            AdamWConfig::default(),
            settings,
            run.clone(),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Raises `stop` when step `at` is reported, as a signal arriving during that step.
    struct StopAt {
        at: usize,
        stop: StopSignal,
    }

    impl Progress for StopAt {
        fn step(&mut self, report: &StepReport) {
            assert_eq!(self.stop.training_step(), Some(report.step));
            if report.step == self.at {
                self.stop.request();
            }
        }
    }

    fn weight(run_loop: &RunLoop<Pull>) -> Vec<f32> {
        run_loop.task().w.as_tensor().to_vec1().unwrap()
    }

    fn losses(run: &RunDir) -> Vec<f64> {
        super::super::log::read_log(&run.log())
            .iter()
            .map(|e| e.loss)
            .collect()
    }

    #[test]
    fn a_stop_request_ends_the_sitting_with_a_checkpoint_of_its_step_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let straight_run = RunDir::new(dir.path().join("straight"));
        std::fs::create_dir_all(straight_run.root()).unwrap();
        let mut straight = run_loop(Pull::new(None), &straight_run);
        straight.start(false).unwrap();
        straight.run(8, None, &mut NoProgress).unwrap();

        // Step 3 is between periodic checkpoints (every 2); step 4 is one of them.
        for at in [3, 4] {
            let run = RunDir::new(dir.path().join(format!("stop-{at}")));
            std::fs::create_dir_all(run.root()).unwrap();
            let mut first = run_loop(Pull::new(None), &run);
            let stop = StopSignal::new();
            first.settings.stop = stop.clone();
            first.start(false).unwrap();
            let sitting = first
                .run(
                    8,
                    None,
                    &mut StopAt {
                        at,
                        stop: stop.clone(),
                    },
                )
                .unwrap();
            assert_eq!(sitting.stopped, Some(StopReason::Requested));
            assert_eq!((sitting.steps, first.step()), (at, at));
            assert_eq!(stop.training_step(), None);
            let newest = checkpoint::list(&run.checkpoints()).last().unwrap().0;
            assert_eq!(newest, at, "the checkpoint of the stop step");
            assert_eq!(
                StopRecord::read(&run),
                Some(StopRecord {
                    step: at,
                    reason: StopReason::Requested
                })
            );

            let mut resumed = run_loop(Pull::new(None), &run);
            resumed.start(true).unwrap();
            assert_eq!(resumed.step(), at);
            let sitting = resumed.run(8, None, &mut NoProgress).unwrap();
            assert_eq!(sitting.stopped, None);
            assert_eq!(StopRecord::read(&run), None, "the record goes on resume");
            assert_eq!(weight(&resumed), weight(&straight), "stop at {at}");
            assert_eq!(losses(&run), losses(&straight_run), "stop at {at}");
        }
    }

    #[test]
    fn a_run_stopped_while_drawing_a_checkpoint_step_s_pictures_draws_them_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        // Step 4 has pictures and a checkpoint; the run dies drawing the pictures.
        let mut first = run_loop(Pull::new(Some(4)), &run);
        first.start(false).unwrap();
        assert!(first.run(8, None, &mut NoProgress).is_err());
        let listed: Vec<usize> = checkpoint::list(&run.checkpoints())
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(
            listed,
            [2],
            "no checkpoint of a step whose pictures are missing"
        );

        let mut resumed = run_loop(Pull::new(None), &run);
        resumed.start(true).unwrap();
        assert_eq!(resumed.step(), 2);
        resumed.run(8, None, &mut NoProgress).unwrap();
        // The last step's pictures are the caller's.
        assert_eq!(resumed.task().pictures, [4]);
    }
}
