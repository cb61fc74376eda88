//! `styleforge studio`: the local web app (the `styleforge-studio` crate) on this binary.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use styleforge_studio::{Studio, StudioOptions};

/// Arguments of `styleforge studio`.
#[derive(Args, Debug)]
pub struct StudioArgs {
    /// The port to listen on (0: any free port).
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// The runs folder: every run in it is shown, new runs are trained into it.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Listen on another address than 127.0.0.1 (e.g. 0.0.0.0): anyone who can reach it
    /// and has the printed URL can train and read the runs folder.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
}

/// Runs `styleforge studio` until interrupted.
pub fn run(args: &StudioArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let bind = args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if !bind.is_loopback() {
        eprintln!(
            "warning: serving on {bind}, not only this machine: anyone who can reach it and \
             has the URL (its token) can start runs and read the runs folder"
        );
    }
    let opts = StudioOptions {
        bind,
        ..StudioOptions::new(&args.runs, args.port, exe)
    };
    let studio = Studio::bind(&opts)
        .with_context(|| format!("cannot start the studio on port {}", args.port))?;
    // Written once and flushed (a script reading the URL from a pipe must not wait); a
    // reader that has gone away must not stop the server.
    let mut out = std::io::stdout();
    let _ = std::io::Write::write_all(
        &mut out,
        format!(
            "StyleForge Studio: open {}\nruns folder: {}\n",
            studio.url(),
            args.runs.display()
        )
        .as_bytes(),
    );
    let _ = std::io::Write::flush(&mut out);
    studio.serve()?;
    Ok(())
}
