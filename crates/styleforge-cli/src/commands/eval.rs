//! `styleforge eval`: FID, KID, CLIP-T, CLIP-I, CSD style and DINO content / leakage of
//! generated images against reference images, written as `metrics.json` and `report.html` (glue over
//! [`styleforge::evaluation`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use styleforge::evaluation::{
    self, report, CacheLocation, EvalResult, EvalSettings, ImageSet, PromptSource, ResizeMode,
    DEFAULT_STYLE_TOKENS,
};

use styleforge::models::source::ResolveOptions;

use crate::progress::Bar;

/// The resize conventions of FID tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResizeArg {
    /// clean-fid: antialiased bicubic on float data (recommended).
    CleanFid,
    /// pytorch-fid: bilinear without antialiasing.
    PytorchFid,
}

impl From<ResizeArg> for ResizeMode {
    fn from(r: ResizeArg) -> Self {
        match r {
            ResizeArg::CleanFid => ResizeMode::CleanFid,
            ResizeArg::PytorchFid => ResizeMode::PytorchFid,
        }
    }
}

/// `--clip` / `--dino`: a local transformers model folder, or a Hub name resolved through the
/// Hugging Face cache (downloaded when missing; offline from the cache with `HF_HUB_OFFLINE`).
pub fn clip_folder(arg: &Path) -> Result<PathBuf> {
    Ok(super::model_source::resolve(arg, ResolveOptions::transformers())?.path)
}

/// Arguments of `styleforge eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Where to compute.
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// Folder of generated images (PNG, JPEG, WebP; sorted by file name).
    #[arg(long)]
    generated: PathBuf,
    /// Folder of reference (style) images.
    #[arg(long)]
    reference: PathBuf,
    /// Prompts file: one prompt per line (`#` comments and empty lines skipped); generated
    /// image i (sorted) gets line i mod the line count. Default: each PNG's own
    /// `parameters` chunk, as `styleforge generate` writes it.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// FID InceptionV3 weights (safetensors, made by tools/convert_fid_inception.py); enables
    /// FID and KID.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// A transformers CLIPModel folder, or a Hub name (openai/clip-vit-base-patch16, the
    /// paper's; openai/clip-vit-large-patch14, torchmetrics' default) fetched into the
    /// Hugging Face cache; enables CLIP-T and CLIP-I.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// CSD style descriptor (safetensors, made from the published checkpoint by
    /// tools/convert_csd.py); enables the CSD style score and its CSLS form.
    #[arg(long)]
    csd: Option<PathBuf>,
    /// A transformers DINO (ViTModel) or DINOv2 (Dinov2Model) folder, or a Hub name
    /// (facebook/dinov2-base, facebook/dino-vits16); enables DINO content leakage (against
    /// the references) and, with --content, the DINO content score.
    #[arg(long)]
    dino: Option<PathBuf>,
    /// Content references for the DINO content score: one image (e.g. the img2img input,
    /// compared with every generated image) or a folder with one image per generated image
    /// (paired in sorted order).
    #[arg(long, requires = "dino")]
    content: Option<PathBuf>,
    /// CSLS neighbourhood size (clamped to each set's size).
    #[arg(long, default_value_t = 10)]
    csls_k: usize,
    /// Output folder for metrics.json, report.html and thumbs/.
    #[arg(long)]
    out: PathBuf,
    /// How images are resized to Inception's 299×299; FIDs are comparable only within one.
    #[arg(long, value_enum, default_value = "clean-fid")]
    resize: ResizeArg,
    /// Images per forward pass.
    #[arg(long, default_value_t = evaluation::DEFAULT_BATCH_SIZE)]
    batch: usize,
    /// KID: number of subset pairs.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID: subset size [default: min(generated, reference, 1000)].
    #[arg(long)]
    kid_subset_size: Option<usize>,
    /// Seed of the KID subset draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Feature cache folder [default: $XDG_CACHE_HOME/styleforge/features or
    /// ~/.cache/styleforge/features].
    #[arg(long, conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    no_cache: bool,
    /// A style token to remove from prompts for CLIP-T (repeatable; added to the defaults
    /// ohwx, phol, [V], [W] and <...> placeholders).
    #[arg(long = "style-token", value_name = "T")]
    style_tokens: Vec<String>,
}

/// Runs `styleforge eval`.
pub fn run(args: &EvalArgs, quiet: bool) -> Result<()> {
    if args.inception.is_none() && args.clip.is_none() && args.csd.is_none() && args.dino.is_none()
    {
        bail!(
            "nothing to compute: give --inception FILE (FID Inception weights, see \
             tools/convert_fid_inception.py) for FID and KID, --clip DIR (a transformers \
             CLIPModel folder) for CLIP-T and CLIP-I, --csd FILE (see tools/convert_csd.py) \
             for the CSD style score and/or --dino DIR (a DINO / DINOv2 folder) for content \
             and leakage"
        );
    }
    if args.csls_k == 0 {
        bail!("--csls-k must be at least 1");
    }
    if let Some(p) = &args.csd {
        if !p.is_file() {
            bail!(
                "--csd {}: no such file; convert the published CSD checkpoint with \
                 tools/convert_csd.py",
                p.display()
            );
        }
    }
    let content = match &args.content {
        None => None,
        Some(p) if p.is_dir() => Some(ImageSet::Folder(p.clone())),
        Some(p) if p.is_file() => Some(ImageSet::Files(vec![p.clone()])),
        Some(p) => bail!("--content {}: no such image or folder", p.display()),
    };
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.kid_subsets == 0 {
        bail!("--kid-subsets must be at least 1");
    }
    for (flag, dir) in [
        ("--generated", &args.generated),
        ("--reference", &args.reference),
    ] {
        if !dir.is_dir() {
            bail!("{flag} {}: not a folder of images", dir.display());
        }
    }
    if let Some(p) = &args.inception {
        if !p.is_file() {
            bail!(
                "--inception {}: no such file; make it from pytorch-fid's \
                 pt_inception-2015-12-05-6726825d.pth with tools/convert_fid_inception.py",
                p.display()
            );
        }
    }
    let clip = args.clip.as_deref().map(clip_folder).transpose()?;
    let dino = args.dino.as_deref().map(clip_folder).transpose()?;
    let mut settings = EvalSettings::new(
        ImageSet::Folder(args.generated.clone()),
        ImageSet::Folder(args.reference.clone()),
    );
    if let Some(p) = &args.prompts {
        settings.inputs.prompts = PromptSource::File(p.clone());
    }
    settings.inception = args.inception.clone();
    settings.clip = clip;
    settings.csd = args.csd.clone();
    settings.dino = dino;
    settings.csls_k = args.csls_k;
    settings.inputs.content = content;
    settings.device = args.device.resolve(Default::default())?;
    settings.resize = args.resize.into();
    settings.batch_size = args.batch;
    settings.kid_subsets = args.kid_subsets;
    settings.kid_subset_size = args.kid_subset_size;
    settings.seed = args.seed;
    settings.cache = if args.no_cache {
        CacheLocation::Disabled
    } else if let Some(dir) = &args.cache {
        CacheLocation::Dir(dir.clone())
    } else {
        CacheLocation::Default
    };
    settings.style_tokens = DEFAULT_STYLE_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(args.style_tokens.iter().cloned())
        .collect();
    settings.device = styleforge::models::candle::Device::cuda_if_available(0)
        .context("cannot open the compute device")?;

    let result = evaluation::evaluate(&settings, &mut Bar::new(quiet)).with_context(|| {
        format!(
            "evaluating {} against {}",
            args.generated.display(),
            args.reference.display()
        )
    })?;
    let files = report::write_outputs(&args.out, &result, &settings.inputs)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    print!("{}", metric_table(&result));
    if !quiet {
        eprintln!(
            "wrote {} and {}",
            files.metrics_json.display(),
            files.report_html.display()
        );
    }
    Ok(())
}

/// The metric table as aligned plain text.
fn metric_table(result: &EvalResult) -> String {
    let rows = result.metric_rows();
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let value_w = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let pad = value_w - r.value.chars().count();
        out.push_str(&format!(
            "{:<name_w$}  {}{}  {}\n",
            r.name,
            r.value,
            " ".repeat(pad),
            r.detail
        ));
    }
    out
}
