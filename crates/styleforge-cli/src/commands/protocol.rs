//! `styleforge protocol`: the paper's evaluation of several trained models, as one table,
//! in one process or as shards on a cluster (glue over [`styleforge::protocol`],
//! [`styleforge::evaluation::protocol`] and [`styleforge::toy::protocol`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use styleforge::evaluation::protocol::{
    parse_prompts, ImageProtocol, ProtocolFile, ProtocolModel, ProtocolSettings, ProtocolStyle,
};
use styleforge::evaluation::CacheLocation;
use styleforge::protocol::{self as engine, Launch, Protocol, ReportFiles, Shard};
use styleforge::toy::protocol::{ToyProtocol, ToyProtocolOptions};

use super::choices::MethodArg;
use super::eval::ResizeArg;
use crate::progress::Bar;

/// Arguments of `styleforge protocol`: the inputs (below) run the protocol here;
/// `--shard i/N` runs one slice of its jobs; `plan` writes the job list and Slurm / Ray
/// files for a cluster; `merge` builds the tables from what the shards wrote.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProtocolArgs {
    #[command(subcommand)]
    action: Option<ProtocolAction>,
    #[command(flatten)]
    inputs: Box<ProtocolInputs>,
    /// Run only slice i of N of the protocol's jobs (0 ≤ i < N; deterministic contiguous
    /// blocks of the job list in plan/jobs.json: training runs and generation), then stop;
    /// `styleforge protocol merge --out DIR` builds the tables once every shard is done.
    #[arg(long, value_name = "i/N", value_parser = parse_shard)]
    shard: Option<Shard>,
}

#[derive(Subcommand, Debug)]
enum ProtocolAction {
    /// Write the protocol's job list (plan/jobs.json in the output folder) and ready-made
    /// Slurm (job array + merge) and Ray job-submission files that run it in shards.
    Plan(Box<PlanArgs>),
    /// Build the tables from what the shards wrote (the same files a single run writes);
    /// the protocol's inputs are read back from plan/jobs.json.
    Merge(MergeArgs),
}

/// Arguments of `styleforge protocol plan`.
#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    inputs: ProtocolInputs,
    /// How many shards (Slurm array tasks / Ray jobs).
    #[arg(long, default_value_t = 4)]
    shards: usize,
}

/// Arguments of `styleforge protocol merge`.
#[derive(Args, Debug)]
struct MergeArgs {
    /// The protocol's output folder (where the shards wrote).
    #[arg(long)]
    out: PathBuf,
}

fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    s.parse().map_err(|e: styleforge::Error| e.to_string())
}

/// The inputs of a protocol (a run, a shard of it, or its plan).
///
/// Either a TOML file (`--config`) with `[[style]]` tables (name, reference) and
/// `[[model]]` tables (run = a training run folder, or path = a model folder with phrase =
/// "ohwx style"; optional label and style), plus any of the keys prompts, images_per_prompt,
/// steps, guidance, guidance_rescale, scheduler, negative_prompt, seed, width, height,
/// inception, clip, csd, dino, content_from, out;
/// or the flags below for one style. Flags add to and override the file.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ProtocolInputs {
    /// Where to compute (training, sampling, scoring).
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// A protocol TOML file (several styles and models).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A `styleforge train` run folder to evaluate (repeatable); its method names the row.
    #[arg(long = "run", value_name = "DIR")]
    runs: Vec<PathBuf>,
    /// A model folder to evaluate as `LABEL=PATH` (repeatable), prompted with `--phrase`.
    #[arg(long = "model", value_name = "LABEL=PATH")]
    models: Vec<String>,
    /// The style phrase appended to content prompts for `--model` entries (e.g. "ohwx
    /// style"); none by default (the base model's own behaviour).
    #[arg(long)]
    phrase: Option<String>,
    /// Reference images of the style (for `--run` / `--model` entries).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The style's name in the table.
    #[arg(long, default_value = "style")]
    style: String,
    /// Content prompts file: `person: …` / `scene: …` lines [default: the shipped list of
    /// 20 people and 20 scene prompts].
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Use only the first N prompts (a quick look before the full run).
    #[arg(long)]
    max_prompts: Option<usize>,
    /// Images per prompt and model [default: 4].
    #[arg(long)]
    images_per_prompt: Option<usize>,
    /// Denoising steps [default: 30].
    #[arg(long)]
    steps: Option<usize>,
    /// Guidance scale [default: 7.5].
    #[arg(long)]
    guidance: Option<f64>,
    /// Guidance rescale φ, 0 to 1 [default: 0, off].
    #[arg(long, value_parser = super::sampling::guidance_rescale)]
    guidance_rescale: Option<f64>,
    /// Sampler [default: ddim].
    #[arg(long)]
    scheduler: Option<String>,
    /// Seed of the first image [default: 1337].
    #[arg(long)]
    seed: Option<u64>,
    /// Image width [default: the model's native size].
    #[arg(long)]
    width: Option<usize>,
    /// Image height [default: the model's native size].
    #[arg(long)]
    height: Option<usize>,
    /// FID InceptionV3 weights (safetensors): FID and KID.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// A transformers CLIPModel folder or Hub name (the paper uses
    /// openai/clip-vit-base-patch16): CLIP-T and CLIP-I.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// CSD style descriptor (safetensors from tools/convert_csd.py): the "CSD ↑" column
    /// and the style-against-content scatter plot.
    #[arg(long)]
    csd: Option<PathBuf>,
    /// A transformers DINO / DINOv2 folder or Hub name: the "leak ↓" column and, with
    /// --content-from, "DINO content ↑".
    #[arg(long)]
    dino: Option<PathBuf>,
    /// The row label whose pictures (same prompt and seed) are the other rows' content
    /// references for "DINO content ↑", e.g. the base model given as --model base=PATH.
    #[arg(long, value_name = "LABEL")]
    content_from: Option<String>,
    /// Also score every kept checkpoint of each --run (full fine-tuning runs), one row per
    /// step beside the final model, with a chart per run of CSD, CLIP-T and leak by step and
    /// the step where the style score stops improving (recorded in protocol.json, for
    /// `styleforge convert --step best`). A run that writes its EMA as the model is scored
    /// with its checkpoints' EMA weights.
    #[arg(long)]
    checkpoints: bool,
    /// How images are resized to Inception's input.
    #[arg(long, value_enum, default_value = "clean-fid")]
    resize: ResizeArg,
    /// Feature cache folder [default: the user cache folder].
    #[arg(long, conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    no_cache: bool,
    /// Output folder (images/, evals/, protocol.md, protocol.html, protocol.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the toy-world protocol instead: every method trained on each held-out style from
    /// the toy base model, then measured by the probes (style distance and accuracy,
    /// content, drift), plus the two ablations; --steps, --guidance, --guidance-rescale,
    /// --seed and --out apply.
    #[arg(long)]
    toy: bool,
    /// Toy: held-out styles to learn [default: cel,cubist,pointillist].
    #[arg(long, value_delimiter = ',', requires = "toy")]
    held_out: Vec<String>,
    /// Toy: methods to compare [default: all six].
    #[arg(long, value_enum, value_delimiter = ',', requires = "toy")]
    methods: Vec<MethodArg>,
    /// Toy: skip the StyleRef-composition and Aux ablations.
    #[arg(long, requires = "toy")]
    no_ablations: bool,
    /// Toy: training steps of every run [default: each method's toy recipe].
    #[arg(long, requires = "toy")]
    train_steps: Option<usize>,
    /// Toy: token prompts per model [default: 24].
    #[arg(long, requires = "toy")]
    eval_prompts: Option<usize>,
    /// Toy: try a training-config key at several values, each run beside its method's
    /// recipe in a table of its own (repeatable), e.g. --vary training.snr_gamma=0,5.
    #[arg(long, value_name = "KEY=V1,V2", requires = "toy")]
    vary: Vec<String>,
    /// Toy: base model folder [default: the embedded toy base model].
    #[arg(long, requires = "toy")]
    base: Option<PathBuf>,
    /// Toy: probes folder [default: the embedded probes].
    #[arg(long, requires = "toy")]
    probes: Option<PathBuf>,
}

fn toy_options(args: &ProtocolInputs) -> Result<ToyProtocolOptions> {
    use styleforge::world::Style;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("toy-protocol"));
    let shipped = out.join("shipped");
    let base = match &args.base {
        Some(b) => b.clone(),
        None => styleforge::toy::unpack_base_model(&shipped)?,
    };
    let probes = match &args.probes {
        Some(p) => p.clone(),
        None => styleforge::toy::unpack_probes(&shipped)?,
    };
    let mut opts = ToyProtocolOptions::new(base, probes, out);
    opts.device = args.device.resolve(Default::default())?;
    if !args.held_out.is_empty() {
        opts.styles = args
            .held_out
            .iter()
            .map(|s| {
                Style::from_name(s).with_context(|| {
                    format!("unknown style `{s}` (held-out styles: cel, cubist, pointillist)")
                })
            })
            .collect::<Result<_>>()?;
    }
    if !args.methods.is_empty() {
        opts.methods = args.methods.iter().map(|&m| m.into()).collect();
    }
    opts.ablations = !args.no_ablations;
    opts.steps = args.train_steps;
    if let Some(n) = args.eval_prompts {
        opts.eval_prompts = n.max(2);
    }
    if let Some(n) = args.steps {
        opts.sample_steps = n;
    }
    if let Some(g) = args.guidance {
        opts.guidance = g;
    }
    if let Some(phi) = args.guidance_rescale {
        opts.guidance_rescale = phi;
    }
    if let Some(s) = args.seed {
        opts.seed = s;
    }
    opts.vary = args
        .vary
        .iter()
        .map(|v| styleforge::toy::protocol::Variation::parse(v))
        .collect::<std::result::Result<_, _>>()?;
    Ok(opts)
}

fn image_settings(args: &ProtocolInputs) -> Result<ProtocolSettings> {
    let mut file = match &args.config {
        Some(p) => ProtocolFile::from_file(p)?,
        None => ProtocolFile::default(),
    };
    let flag_models = !args.runs.is_empty() || !args.models.is_empty();
    if flag_models {
        let Some(reference) = &args.reference else {
            bail!("--run / --model need --reference DIR (the style's reference images)");
        };
        if !file.style.iter().any(|s| s.name == args.style) {
            file.style.push(ProtocolStyle {
                name: args.style.clone(),
                reference: reference.clone(),
            });
        }
        for run in &args.runs {
            let mut steps: Vec<Option<usize>> = Vec::new();
            if args.checkpoints {
                let kept = styleforge::evaluation::protocol::run_checkpoint_steps(run);
                if kept.is_empty() {
                    bail!(
                        "--checkpoints: {} has no checkpoints (train with \
                         output.checkpoint_every > 0, and output.keep_checkpoints large \
                         enough to keep the ones to compare)",
                        run.display()
                    );
                }
                steps.extend(kept.into_iter().map(Some));
            }
            steps.push(None);
            for checkpoint in steps {
                file.model.push(ProtocolModel {
                    label: None,
                    style: Some(args.style.clone()),
                    run: Some(run.clone()),
                    path: None,
                    phrase: None,
                    checkpoint,
                });
            }
        }
        for m in &args.models {
            let Some((label, path)) = m.split_once('=') else {
                bail!("--model {m}: expected LABEL=PATH");
            };
            file.model.push(ProtocolModel {
                label: Some(label.to_string()),
                style: Some(args.style.clone()),
                run: None,
                path: Some(PathBuf::from(path)),
                phrase: args.phrase.clone(),
                checkpoint: None,
            });
        }
    }
    if file.model.is_empty() {
        bail!("nothing to evaluate: give --run DIR / --model LABEL=PATH with --reference, or --config FILE");
    }
    let Some(out) = args.out.clone().or(file.out.take()) else {
        bail!("--out DIR is required (or `out` in the protocol file)");
    };
    let mut settings = ProtocolSettings::new(file.style, file.model, out);
    settings.eval.device = args.device.resolve(Default::default())?;
    if let Some(p) = args.prompts.as_ref().or(file.prompts.as_ref()) {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        settings.prompts =
            parse_prompts(&text).with_context(|| format!("prompts file {}", p.display()))?;
    }
    if let Some(n) = args.max_prompts {
        settings.prompts.truncate(n.max(1));
    }
    if let Some(n) = args.images_per_prompt.or(file.images_per_prompt) {
        settings.images_per_prompt = n;
    }
    if let Some(n) = args.steps.or(file.steps) {
        settings.sampling.steps = n;
    }
    if let Some(g) = args.guidance.or(file.guidance) {
        settings.sampling.guidance_scale = g;
    }
    if let Some(phi) = args.guidance_rescale.or(file.guidance_rescale) {
        styleforge::pipelines::check_guidance_rescale(phi)?;
        settings.sampling.guidance_rescale = phi;
    }
    if let Some(s) = args.scheduler.clone().or(file.scheduler) {
        styleforge::schedulers::SchedulerKind::from_name(&s, false)?;
        settings.sampling.scheduler.name = Some(s);
    }
    settings.sampling.negative_prompt = file.negative_prompt;
    if let Some(s) = args.seed.or(file.seed) {
        settings.seed = s;
    }
    settings.size = match (args.width.or(file.width), args.height.or(file.height)) {
        (None, None) => None,
        (Some(w), Some(h)) => Some((w, h)),
        (Some(s), None) | (None, Some(s)) => Some((s, s)),
    };
    settings.eval.inception = args.inception.clone().or(file.inception);
    settings.eval.clip = args
        .clip
        .clone()
        .or(file.clip)
        .as_deref()
        .map(super::eval::clip_folder)
        .transpose()?;
    settings.eval.csd = args.csd.clone().or(file.csd);
    if let Some(p) = &settings.eval.csd {
        if !p.is_file() {
            bail!(
                "CSD file {}: no such file; convert the published checkpoint with \
                 tools/convert_csd.py",
                p.display()
            );
        }
    }
    settings.eval.dino = args
        .dino
        .clone()
        .or(file.dino)
        .as_deref()
        .map(super::eval::clip_folder)
        .transpose()?;
    settings.content_from = args.content_from.clone().or(file.content_from);
    if settings.content_from.is_some() && settings.eval.dino.is_none() {
        bail!("--content-from needs a DINO model (--dino) for the content score");
    }
    settings.eval.resize = args.resize.into();
    settings.eval.cache = match (&args.cache, args.no_cache) {
        (_, true) => CacheLocation::Disabled,
        (Some(d), _) => CacheLocation::Dir(d.clone()),
        (None, false) => CacheLocation::Default,
    };
    let e = &settings.eval;
    if e.inception.is_none() && e.clip.is_none() && e.csd.is_none() && e.dino.is_none() {
        bail!(
            "no metric to compute: give --inception (FID, KID), --clip (CLIP-T, CLIP-I), \
             --csd (CSD style) and/or --dino (DINO content and leak)"
        );
    }
    Ok(settings)
}

/// A protocol ready to run: the toy world's or real images'. Both boxed: the options hold a
/// `Device`, which is large in a CUDA build.
enum Setup {
    Toy(Box<ToyProtocolOptions>),
    Images(Box<ProtocolSettings>),
}

impl Setup {
    fn from_inputs(args: &ProtocolInputs) -> Result<Self> {
        Ok(if args.toy {
            Setup::Toy(Box::new(toy_options(args)?))
        } else {
            Setup::Images(Box::new(image_settings(args)?))
        })
    }
}

/// What to do with a protocol.
enum Mode {
    Run,
    Shard(Shard, Launch),
    Plan(Launch),
    Merge,
}

fn execute<P: Protocol>(p: &mut P, mode: Mode, quiet: bool) -> Result<()> {
    match mode {
        Mode::Run => print_tables(&engine::run(p, &mut Bar::new(quiet))?.0),
        Mode::Merge => print_tables(&engine::merge(p, &mut Bar::new(quiet))?.0),
        Mode::Shard(shard, launch) => {
            let done = engine::run_shard(p, shard, Some(&launch), &mut Bar::new(quiet))?;
            println!(
                "shard {shard}: {} jobs done; when every shard is: {}",
                done.len(),
                engine::plan::shell_line(&launch.merge_command)
            );
            Ok(())
        }
        Mode::Plan(launch) => {
            let f = engine::plan(p, &launch)?;
            println!(
                "{} jobs in {} shards: {}\nSlurm: {} (array {}, merge {})\nRay: {}",
                f.job_count,
                launch.shards,
                f.jobs.display(),
                f.slurm_submit.display(),
                f.slurm_array.display(),
                f.slurm_merge.display(),
                f.ray.display()
            );
            Ok(())
        }
    }
}

fn print_tables(files: &ReportFiles) -> Result<()> {
    print!(
        "{}",
        std::fs::read_to_string(&files.markdown).unwrap_or_default()
    );
    println!("table: {}", files.html.display());
    Ok(())
}

fn run_setup(setup: &Setup, mode: Mode, quiet: bool) -> Result<()> {
    match setup {
        Setup::Toy(opts) => execute(&mut ToyProtocol::new(opts), mode, quiet),
        Setup::Images(settings) => execute(&mut ImageProtocol::new(settings)?, mode, quiet),
    }
}

/// The command line that started this process, split around its `protocol` word: the
/// program (absolute), the global flags before the word, and the words after it.
fn this_command() -> Result<(Vec<String>, Vec<String>)> {
    let args: Vec<String> = std::env::args().collect();
    let at = args
        .iter()
        .skip(1)
        .position(|a| a == "protocol")
        .map(|i| i + 1)
        .context("the command line has no `protocol` word")?;
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| args[0].clone());
    let mut head = vec![program];
    head.extend(args[1..at].iter().cloned());
    head.push("protocol".into());
    Ok((head, args[at + 1..].to_vec()))
}

/// `words` without `flag VALUE` / `flag=VALUE`.
fn without_flag(words: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if std::mem::take(&mut skip) {
            continue;
        }
        if w == flag {
            skip = true;
        } else if !w.starts_with(&format!("{flag}=")) {
            out.push(w.clone());
        }
    }
    out
}

fn launch(head: Vec<String>, words: Vec<String>, out: &Path, shards: usize) -> Result<Launch> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        cwd.join(out)
    };
    let mut merge_command = vec![head[0].clone(), "protocol".into(), "merge".into()];
    merge_command.extend(["--out".into(), out.display().to_string()]);
    let mut command = head;
    command.extend(words);
    Ok(Launch {
        command,
        merge_command,
        cwd,
        shards,
    })
}

fn setup_out(setup: &Setup) -> &Path {
    match setup {
        Setup::Toy(o) => &o.out,
        Setup::Images(s) => &s.out,
    }
}

fn merge(args: &MergeArgs, quiet: bool) -> Result<()> {
    let plan = engine::plan::read_plan(&args.out)?;
    let recorded = crate::Cli::try_parse_from(&plan.launch.command).with_context(|| {
        format!(
            "the command in {} does not parse",
            engine::plan::plan_file(&args.out).display()
        )
    })?;
    let crate::Command::Protocol(p) = recorded.command else {
        bail!(
            "the command in {} is not a protocol",
            engine::plan::plan_file(&args.out).display()
        );
    };
    // The recorded paths are relative to where the plan was made.
    std::env::set_current_dir(&plan.launch.cwd).with_context(|| {
        format!(
            "cannot enter {}, the folder the protocol was planned in",
            plan.launch.cwd.display()
        )
    })?;
    let setup = Setup::from_inputs(&p.inputs)?;
    run_setup(&setup, Mode::Merge, quiet)
}

/// Runs `styleforge protocol`.
pub fn run(args: &ProtocolArgs, quiet: bool) -> Result<()> {
    match &args.action {
        Some(ProtocolAction::Merge(m)) => merge(m, quiet),
        Some(ProtocolAction::Plan(plan)) => {
            if plan.shards == 0 {
                bail!("--shards must be at least 1");
            }
            let setup = Setup::from_inputs(&plan.inputs)?;
            let (head, words) = this_command()?;
            // `plan … --shards N` → the protocol's own words.
            let words = without_flag(words.get(1..).unwrap_or_default(), "--shards");
            let launch = launch(head, words, setup_out(&setup), plan.shards)?;
            run_setup(&setup, Mode::Plan(launch), quiet)
        }
        None => {
            let setup = Setup::from_inputs(&args.inputs)?;
            match args.shard {
                None => run_setup(&setup, Mode::Run, quiet),
                Some(shard) => {
                    let (head, words) = this_command()?;
                    let words = without_flag(&words, "--shard");
                    let launch = launch(head, words, setup_out(&setup), shard.count)?;
                    run_setup(&setup, Mode::Shard(shard, launch), quiet)
                }
            }
        }
    }
}
