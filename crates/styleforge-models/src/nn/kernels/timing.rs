//! Ignored tests that time the tiny UNet's forward and train step with the fused kernels
//! and with plain ops, for quick comparisons without the CLI:
//! `cargo test --release -p styleforge-models --lib timing -- --ignored --nocapture`.
//! (`styleforge bench` is the reference measurement.)

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
use candle_nn::VarMap;

use crate::config::parse_config;
use crate::init::PyTorchInit;
use crate::unet::{UNet2DConditionModel, UNetConfig};

const TINY: &str = include_str!("../../../../../bench/configs/unet-tiny.json");

/// CPU time of the whole process in ms (insensitive to other processes' load when the
/// work runs on one thread: `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1`).
fn cpu_ms() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain syscall writing into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_tiny(batch: usize, train: bool) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = PyTorchInit::var_builder(&varmap, 0, DType::F32, &dev);
    let path = Path::new("unet-tiny.json");
    let cfg: UNetConfig = parse_config(TINY, path)?;
    let unet = UNet2DConditionModel::new(&cfg, vb)?;
    let sample = Tensor::randn(0f32, 1., (batch, cfg.in_channels, 32, 32), &dev)?;
    let context = Tensor::randn(0f32, 1., (batch, 77, cfg.context_dim()), &dev)?;
    let t: Vec<f32> = (0..batch).map(|i| (100 + 400 * i) as f32).collect();
    let timesteps = Tensor::from_vec(t, batch, &dev)?;
    let target = Tensor::randn(0f32, 1., (batch, cfg.out_channels, 32, 32), &dev)?;
    let once = || -> Result<()> {
        let pred = unet.forward(&sample, &timesteps, &context)?;
        if train {
            (pred - &target)?.sqr()?.mean_all()?.backward()?;
        }
        Ok(())
    };
    once()?;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let (start, c0) = (Instant::now(), cpu_ms());
        once()?;
        wall.push(start.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - c0);
    }
    Ok((median(wall), median(cpu)))
}

#[test]
#[ignore = "timing, run by hand"]
fn timing_tiny_unet() -> Result<()> {
    let plain = std::env::var("STYLEFORGE_PLAIN_OPS").is_ok();
    for (batch, train) in [(1, false), (4, false), (1, true), (4, true)] {
        let what = if train {
            "train (no optimiser)"
        } else {
            "forward"
        };
        let (wall, cpu) = time_tiny(batch, train)?;
        println!("tiny {what} b{batch}: {wall:.1} ms wall, {cpu:.1} ms cpu (plain ops: {plain})");
    }
    Ok(())
}
