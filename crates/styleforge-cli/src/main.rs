//! `styleforge`: the command line over the StyleForge library.

mod commands;
mod progress;
mod runtime;
mod stop;

use clap::{Parser, Subcommand};

/// Teach a Stable Diffusion model an artistic style, then generate and evaluate in it.
#[derive(Parser, Debug)]
#[command(name = "styleforge", version, about)]
struct Cli {
    /// Print less (errors only).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print more (debug logs).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run StyleForge end to end on the embedded tiny model and style images.
    Demo(commands::demo::DemoArgs),
    /// Fine-tune a model on a style (StyleForge, Multi-StyleForge, DreamBooth).
    Train(commands::train::TrainArgs),
    /// Pretrain a small base model from scratch (VAE, then UNet + text encoder) on the toy
    /// world or a captioned folder.
    Pretrain(commands::pretrain::PretrainArgs),
    /// Generate images from a prompt (text-to-image).
    Generate(commands::generate::GenerateArgs),
    /// Turn an image into the model's style (image-to-image, SDEdit).
    Stylize(commands::stylize::StylizeArgs),
    /// Show how a prompt is tokenized, and where the 77-token limit cuts it.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Time the models' forward passes and training steps.
    Bench(commands::bench::BenchArgs),
    /// Convert a diffusers folder to a single-file checkpoint, or a single file to a folder;
    /// or write a training run's checkpoint (`--step N|best`) as a diffusers folder.
    Convert(commands::convert::ConvertArgs),
    /// Score generated images against reference images: FID, KID, CLIP-T, CLIP-I, HTML report.
    Eval(commands::eval::EvalArgs),
    /// The paper's evaluation of trained models: generate from content prompts, score, one table.
    Protocol(commands::protocol::ProtocolArgs),
    /// A local web app: pick style images, train, watch runs live, generate, compare.
    Studio(commands::studio::StudioArgs),
    /// Toy-world tools: `toy probes` trains the style/content probes.
    Toy(commands::toy::ToyArgs),
    /// Check the tool under adversity: `selftest faults` kills, resumes and compares a
    /// training run; `selftest fuzz` feeds mutated files to the readers of user input.
    Selftest(commands::selftest::SelftestArgs),
}

fn init_logging(quiet: bool, verbose: bool) {
    let default = if quiet {
        "error"
    } else if verbose {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STYLEFORGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn main() -> std::process::ExitCode {
    // One CPU thread pool instead of two competing ones, rayon sized to the CPUs, and
    // malloc that keeps freed tensor memory (measured in nn::kernels::runtime); before any
    // thread exists.
    let runtime = runtime::configure();
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    tracing::debug!("CPU runtime: {runtime}");
    let done = |r: anyhow::Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    // `train` and `pretrain` choose their exit code: a run stopped by a signal is not a
    // success (see `stop`).
    let result = match &cli.command {
        Command::Demo(args) => done(commands::demo::run(args, cli.quiet)),
        Command::Train(args) => commands::train::run(args, cli.quiet),
        Command::Generate(args) => done(commands::generate::run(args, cli.quiet)),
        Command::Stylize(args) => done(commands::stylize::run(args, cli.quiet)),
        Command::Tokenize(args) => done(commands::tokenize::run(args)),
        Command::Bench(args) => done(commands::bench::run(args)),
        Command::Convert(args) => done(commands::convert::run(args, cli.quiet)),
        Command::Eval(args) => done(commands::eval::run(args, cli.quiet)),
        Command::Protocol(args) => done(commands::protocol::run(args, cli.quiet)),
        Command::Pretrain(args) => commands::pretrain::run(args, cli.quiet),
        Command::Toy(args) => done(commands::toy::run(args, cli.quiet)),
        Command::Studio(args) => done(commands::studio::run(args)),
        Command::Selftest(args) => done(commands::selftest::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
