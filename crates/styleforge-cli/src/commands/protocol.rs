//! `styleforge protocol`: the paper's evaluation of several trained models, as one table
//! (glue over [`styleforge::evaluation::protocol`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use styleforge::evaluation::protocol::{
    parse_prompts, run_protocol, ProtocolFile, ProtocolModel, ProtocolSettings, ProtocolStyle,
};
use styleforge::evaluation::CacheLocation;

use super::choices::MethodArg;
use super::eval::ResizeArg;
use crate::progress::Bar;

/// Arguments of `styleforge protocol`.
///
/// Either a TOML file (`--config`) with `[[style]]` tables (name, reference) and
/// `[[model]]` tables (run = a training run folder, or path = a model folder with phrase =
/// "ohwx style"; optional label and style), plus any of the keys prompts, images_per_prompt,
/// steps, guidance, scheduler, negative_prompt, seed, width, height, inception, clip, out;
/// or the flags below for one style. Flags add to and override the file.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ProtocolArgs {
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
    /// content, drift), plus the two ablations; --steps, --guidance, --seed and --out apply.
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
    /// Toy: base model folder [default: the embedded toy base model].
    #[arg(long, requires = "toy")]
    base: Option<PathBuf>,
    /// Toy: probes folder [default: the embedded probes].
    #[arg(long, requires = "toy")]
    probes: Option<PathBuf>,
}

fn run_toy(args: &ProtocolArgs, quiet: bool) -> Result<()> {
    use styleforge::toy::protocol::{run_toy_protocol, ToyProtocolOptions};
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
    if let Some(s) = args.seed {
        opts.seed = s;
    }
    let result = run_toy_protocol(&opts, &mut Bar::new(quiet))?;
    print!(
        "{}",
        std::fs::read_to_string(&result.markdown).unwrap_or_default()
    );
    println!("table: {}", result.html.display());
    Ok(())
}

/// Runs `styleforge protocol`.
pub fn run(args: &ProtocolArgs, quiet: bool) -> Result<()> {
    if args.toy {
        return run_toy(args, quiet);
    }
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
            file.model.push(ProtocolModel {
                label: None,
                style: Some(args.style.clone()),
                run: Some(run.clone()),
                path: None,
                phrase: None,
            });
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
    settings.eval.resize = args.resize.into();
    settings.eval.cache = match (&args.cache, args.no_cache) {
        (_, true) => CacheLocation::Disabled,
        (Some(d), _) => CacheLocation::Dir(d.clone()),
        (None, false) => CacheLocation::Default,
    };
    if settings.eval.inception.is_none() && settings.eval.clip.is_none() {
        bail!("no metric to compute: give --inception (FID, KID) and/or --clip (CLIP-T, CLIP-I)");
    }
    let result = run_protocol(&settings, &mut Bar::new(quiet))?;
    print!(
        "{}",
        std::fs::read_to_string(&result.markdown).unwrap_or_default()
    );
    println!("table: {}", result.html.display());
    Ok(())
}
