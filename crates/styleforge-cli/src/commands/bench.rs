//! `styleforge bench`: times the named workloads, each in its own process so that peak
//! memory is per workload, and optionally PyTorch's timings of the same workloads in the
//! same run for a ratio.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use styleforge::bench::{self, Timing};

/// Arguments of `styleforge bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Where to compute (both sides: the PyTorch companion gets the same device).
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// Comma-separated workload names, `all` (see `--list`), or `memory`: the SD-1.5 512 px
    /// StyleForge training steps (tens of GB and minutes each on a CPU; not part of `all`,
    /// nor are the other 512 px workloads: `sd15-512-ddim30`, `sd15-generate-512` and
    /// `vae-decode-sd15-512`).
    #[arg(long, default_value = "all")]
    workloads: String,
    /// Timed repetitions per workload.
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Threads for both frameworks (sets RAYON_NUM_THREADS / torch threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Also run tools/bench/bench_torch.py with this Python (one that has torch and
    /// diffusers) and print ours/PyTorch ratios.
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// Where the PyTorch companion script lives.
    #[arg(long, default_value = "tools/bench/bench_torch.py")]
    torch_script: PathBuf,
    /// Write all results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Internal: run one workload in this process and print its result as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    styleforge::training::memory::peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
}

/// The square size of the gemm peak measurement.
const PEAK_SIZE: usize = 2048;

fn run_child(name: &str, args: &BenchArgs) -> Result<()> {
    if name == "gemm-peak" {
        let gflops = styleforge::models::nn::kernels::gemm_peak_gflops(PEAK_SIZE, 5);
        println!("{}", json!({ "gflops": gflops, "size": PEAK_SIZE }));
        return Ok(());
    }
    let w = bench::workload(name).with_context(|| format!("unknown workload `{name}`"))?;
    let device = args.device.resolve(Default::default())?;
    let timing = bench::run(&w, args.warmup, args.repeats, &device)?;
    let out = json!({ "timing": timing, "peak_rss_mb": peak_rss_mb() });
    println!("{out}");
    Ok(())
}

fn selected(spec: &str) -> Result<Vec<&'static str>> {
    let all: Vec<&'static str> = bench::workloads().iter().map(|w| w.name).collect();
    let pick = |keep: fn(&bench::Workload) -> bool| -> Vec<&'static str> {
        bench::workloads()
            .into_iter()
            .filter(keep)
            .map(|w| w.name)
            .collect()
    };
    match spec {
        "all" => return Ok(pick(|w| !w.is_large())),
        "memory" => {
            return Ok(pick(|w| {
                w.is_large() && w.kind == bench::BenchKind::TrainStep
            }))
        }
        _ => {}
    }
    spec.split(',')
        .map(|s| {
            let s = s.trim();
            all.iter()
                .copied()
                .find(|n| *n == s)
                .with_context(|| format!("unknown workload `{s}`; known: {}", all.join(", ")))
        })
        .collect()
}

fn torch_results(
    python: &PathBuf,
    args: &BenchArgs,
    names: &[&str],
    device: &str,
) -> Result<Value> {
    if !args.torch_script.is_file() {
        bail!(
            "PyTorch script {} not found; run from the repository root or pass --torch-script",
            args.torch_script.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("styleforge-torch-bench-")
        .suffix(".json")
        .tempfile()
        .context("cannot create a temporary file for the PyTorch results")?
        .into_temp_path();
    let out = tmp.to_path_buf();
    let mut command = Command::new(python);
    if styleforge::models::nn::kernels::simd::kernel_isa() == "avx2" {
        // Like for like: a build taking the AVX2 paths is compared with PyTorch capped at
        // AVX2 as well (ATen's kernels, MKL and oneDNN); no-ops on an AVX2-only CPU.
        command
            .env("ATEN_CPU_CAPABILITY", "avx2")
            .env("MKL_ENABLE_INSTRUCTIONS", "AVX2")
            .env("ONEDNN_MAX_CPU_ISA", "AVX2");
    }
    let status = command
        .arg(&args.torch_script)
        .args(["--workloads", &names.join(",")])
        .args(["--repeats", &args.repeats.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--device", device])
        .arg("--json")
        .arg(&out)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("the PyTorch benchmark failed ({status})");
    }
    let text = std::fs::read_to_string(&out)?;
    drop(tmp);
    Ok(serde_json::from_str(&text)?)
}

/// Runs `name` (a workload or `gemm-peak`) in a fresh process and reads its JSON line.
fn child_json(exe: &Path, name: &str, args: &BenchArgs) -> Result<Value> {
    let output = Command::new(exe)
        .args(["bench", "--child", name])
        .args(["--repeats", &args.repeats.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(
            args.device
                .device
                .map(|d| vec!["--device".to_string(), d.to_string()])
                .unwrap_or_default(),
        )
        .env("RAYON_NUM_THREADS", args.threads.to_string())
        .output()
        .context("cannot start a benchmark process")?;
    if !output.status.success() {
        bail!(
            "workload {name} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim())
        .with_context(|| format!("unreadable result from {name}: {line}"))
}

/// Runs `styleforge bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(name) = &args.child {
        return run_child(name, args);
    }
    // Checked (and printed) before any workload runs.
    let device = styleforge::device::describe(&args.device.resolve(Default::default())?);
    if args.list {
        for w in bench::workloads() {
            println!(
                "{:<24} {:?} {:?} batch {}",
                w.name, w.model, w.kind, w.batch
            );
        }
        return Ok(());
    }
    let names = selected(&args.workloads)?;
    let exe = std::env::current_exe().context("cannot find the styleforge executable")?;
    let mut ours = serde_json::Map::new();
    eprintln!("measuring the f32 gemm peak ({PEAK_SIZE}³) ...");
    let peak = child_json(&exe, "gemm-peak", args)?;
    let peak_gflops = peak["gflops"].as_f64().unwrap_or(f64::NAN);
    for name in &names {
        eprintln!("timing {name} ...");
        // A workload that fails (out of memory, say) is reported, not fatal to the rest.
        let result = child_json(&exe, name, args).unwrap_or_else(|e| {
            eprintln!("{e:#}");
            json!({ "error": format!("{e:#}") })
        });
        ours.insert(name.to_string(), result);
    }
    let torch = match &args.torch {
        Some(python) => Some(torch_results(python, args, &names, &device)?),
        None => None,
    };

    let torch_peak = torch.as_ref().and_then(|t| t["gemm_peak_gflops"].as_f64());
    let fmt = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |x| format!("{x:.p$}"));
    let cpu = cpu_model();
    let isa = styleforge::models::nn::kernels::simd::kernel_isa();
    println!(
        "cpu: {}; our kernels: {isa}; PyTorch's: {}",
        cpu.as_deref().unwrap_or("unknown"),
        torch
            .as_ref()
            .and_then(|t| t["cpu_capability"].as_str())
            .unwrap_or("-")
    );
    println!(
        "f32 gemm peak ({PEAK_SIZE}³, {} threads): ours {peak_gflops:.1} GFLOP/s, PyTorch {} GFLOP/s",
        args.threads,
        fmt(torch_peak, 1)
    );
    println!(
        "{:<22} {:>11} {:>17} {:>9} {:>11} {:>9} {:>7} {:>8} {:>6} {:>8}",
        "workload",
        "ours ms",
        "(min-max)",
        "ours MiB",
        "torch ms",
        "torch MiB",
        "ratio",
        "GFLOP/s",
        "%peak",
        "torch GF"
    );
    for name in &names {
        let v = &ours[*name];
        if let Some(e) = v["error"].as_str() {
            let first = e.lines().last().unwrap_or(e);
            println!("{name:<22} failed: {first}");
            continue;
        }
        let t: Timing = serde_json::from_value(v["timing"].clone())?;
        let mem = v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
        let tw = torch.as_ref().map(|t| &t["workloads"][*name]);
        let tms = tw.and_then(|w| w["median_ms"].as_f64());
        let tmem = tw.and_then(|w| w["peak_rss_mb"].as_f64());
        println!(
            "{:<22} {:>11.1} {:>17} {:>9.0} {:>11} {:>9} {:>7} {:>8.1} {:>6.0} {:>8}",
            name,
            t.median_ms,
            format!("({:.1}-{:.1})", t.min_ms, t.max_ms),
            mem,
            fmt(tms, 1),
            fmt(tmem, 0),
            fmt(tms.map(|x| t.median_ms / x), 2),
            t.gflops(),
            100.0 * t.gflops() / peak_gflops,
            fmt(tms.map(|x| t.gflop / (x / 1e3)), 1),
        );
        // A workload's stages, each beside PyTorch's stage of the same name.
        for stage in &t.stages {
            let tms = tw.and_then(|w| {
                w["stages"]
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == stage.name.as_str())?["median_ms"]
                    .as_f64()
            });
            println!(
                "{:<22} {:>11.1} {:>17} {:>9} {:>11} {:>9} {:>7}",
                format!("  {}", stage.name),
                stage.median_ms,
                "",
                "",
                fmt(tms, 1),
                "",
                fmt(tms.map(|x| stage.median_ms / x), 2),
            );
        }
    }
    if let Some(path) = &args.json {
        let all = json!({
            "threads": args.threads,
            "cpu": cpu,
            "kernels": isa,
            "gemm_peak_gflops": { "styleforge": peak_gflops, "pytorch": torch_peak },
            "styleforge": ours,
            "pytorch": torch,
        });
        std::fs::write(path, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The CPU's model name (`/proc/cpuinfo`), where the system says it.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}
