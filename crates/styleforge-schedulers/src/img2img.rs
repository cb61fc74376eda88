//! The image-to-image schedule: diffusers' `StableDiffusionImg2ImgPipeline.get_timesteps`.

use crate::error::{Result, SchedulerError};
use crate::Scheduler;

/// The part of the schedule an img2img generation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Img2ImgSchedule {
    /// The timesteps to run, in order (a suffix of `scheduler.timesteps()`).
    pub timesteps: Vec<f64>,
    /// The number of denoising steps that will run (diffusers' second return value,
    /// `num_inference_steps - t_start`; PNDM runs one more `step` call than this).
    pub num_inference_steps: usize,
    /// The index of `timesteps[0]` in the full schedule (`t_start * order`), already passed to
    /// `set_begin_index`.
    pub begin_index: usize,
}

impl Img2ImgSchedule {
    /// The timestep to noise the encoded image to with [`Scheduler::add_noise`]
    /// (diffusers' `latent_timestep = timesteps[:1]`).
    pub fn latent_timestep(&self) -> f64 {
        self.timesteps[0]
    }
}

/// Sets up `scheduler` for img2img with `num_inference_steps` and `strength` in `[0, 1]`:
/// calls `set_timesteps(num_inference_steps)`, then as diffusers' `get_timesteps`:
/// `init_timestep = min(int(num_inference_steps * strength), num_inference_steps)`,
/// `t_start = max(num_inference_steps - init_timestep, 0)`, keeps
/// `timesteps[t_start * order..]` and calls `set_begin_index(t_start * order)`.
///
/// Fails if `strength` is outside `[0, 1]` or so small that no step would run.
pub fn img2img_timesteps(
    scheduler: &mut dyn Scheduler,
    num_inference_steps: usize,
    strength: f64,
) -> Result<Img2ImgSchedule> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(SchedulerError::InvalidArgument {
            scheduler: "img2img_timesteps",
            message: format!("strength must be within [0, 1], got {strength}"),
        });
    }
    scheduler.set_timesteps(num_inference_steps)?;
    // Python's int() truncates the float product (10 * 0.3 = 3.0000000000000004 -> 3).
    let init_timestep = ((num_inference_steps as f64 * strength) as usize).min(num_inference_steps);
    let t_start = num_inference_steps.saturating_sub(init_timestep);
    let begin_index = t_start * scheduler.order();
    let timesteps: Vec<f64> = scheduler
        .timesteps()
        .get(begin_index..)
        .unwrap_or_default()
        .to_vec();
    if timesteps.is_empty() || init_timestep == 0 {
        return Err(SchedulerError::InvalidArgument {
            scheduler: "img2img_timesteps",
            message: format!(
                "strength {strength} with {num_inference_steps} steps leaves no denoising step \
                 (int(steps * strength) = 0); raise strength or num_inference_steps"
            ),
        });
    }
    scheduler.set_begin_index(begin_index);
    Ok(Img2ImgSchedule {
        timesteps,
        num_inference_steps: num_inference_steps - t_start,
        begin_index,
    })
}
