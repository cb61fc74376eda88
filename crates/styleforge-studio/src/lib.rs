//! StyleForge Studio: a local web app over the StyleForge library and binary — pick style
//! images, train (`styleforge train` in a child process), watch the run live, generate from
//! the result and compare runs.
//!
//! - [`auth`]: the per-start token, the Host check and the POST rule.
//! - [`files`]: what may be served (the runs folder, the chosen input folders).
//! - [`runs`]: runs found from their folders, and their state.
//! - [`jobs`]: the trainer and generator child processes.
//! - [`newrun`]: the New style page (folder checks, captions, memory estimate, the config).
//! - [`gallery`]: the Generate page and its gallery on disk.
//! - [`compare`]: the Compare page.
//! - [`server`]: the routes.

pub mod auth;
pub mod compare;
pub mod error;
pub mod files;
pub mod gallery;
pub mod jobs;
pub mod newrun;
pub mod runs;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Result, StudioError};

/// How to start the studio.
#[derive(Debug, Clone)]
pub struct StudioOptions {
    /// The runs folder (created when missing).
    pub runs: PathBuf,
    /// The address to listen on (loopback unless the user asked otherwise).
    pub bind: IpAddr,
    /// The port (0: any free port).
    pub port: u16,
    /// The `styleforge` binary that trains and generates in child processes.
    pub exe: PathBuf,
}

impl StudioOptions {
    /// Loopback on `port`, runs in `runs`, children from `exe`.
    pub fn new(runs: impl Into<PathBuf>, port: u16, exe: impl Into<PathBuf>) -> Self {
        Self {
            runs: runs.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            exe: exe.into(),
        }
    }
}

/// A studio bound to its address, ready to serve.
#[derive(Debug)]
pub struct Studio {
    listener: std::net::TcpListener,
    app: Arc<server::App>,
    url: String,
}

impl Studio {
    /// Binds the address and draws the token.
    pub fn bind(opts: &StudioOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.runs).map_err(StudioError::io(&opts.runs))?;
        let roots = files::Roots::new(&opts.runs)?;
        let addr = SocketAddr::new(opts.bind, opts.port);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| StudioError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StudioError::Bind { addr, source })?;
        let token = auth::new_token();
        let shown = if local.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
        } else {
            local
        };
        let url = format!("http://{shown}/?token={token}");
        let app = server::App {
            gallery: gallery::Gallery::new(roots.runs()),
            roots,
            gate: auth::Gate::new(token, local.ip(), local.port()),
            exe: opts.exe.clone(),
            jobs: Arc::new(jobs::Jobs::default()),
        };
        Ok(Self {
            listener,
            app: Arc::new(app),
            url,
        })
    }

    /// The URL to open, with the token.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The token.
    pub fn token(&self) -> &str {
        self.app.gate.token()
    }

    /// Serves until the process ends.
    pub fn serve(self) -> Result<()> {
        let addr = self
            .local_addr()
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        let bind_err = |source| StudioError::Bind { addr, source };
        self.listener.set_nonblocking(true).map_err(bind_err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind_err)?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener).map_err(bind_err)?;
            axum::serve(listener, server::router(self.app))
                .await
                .map_err(bind_err)
        })
    }
}
