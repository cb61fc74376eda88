//! The HTTP routes: the page and its assets, the JSON API, the run event stream and the
//! files. Every route sits behind one guard (token, Host, POST rule; see [`crate::auth`]).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{Gate, Proof};
use crate::error::{Result, StudioError};
use crate::files::{content_type, Roots};
use crate::gallery::{Gallery, GenerateForm, SAMPLERS};
use crate::jobs::Jobs;
use crate::newrun::{self, NewRunForm};
use crate::runs::{self, StudioFiles};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// How often the event stream looks at a run's files.
const POLL: Duration = Duration::from_millis(500);

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// The folders files are served from.
    pub roots: Roots,
    /// The token rules.
    pub gate: Gate,
    /// The `styleforge` binary children run.
    pub exe: PathBuf,
    /// The training children.
    pub jobs: Arc<Jobs>,
    /// The generated pictures.
    pub gallery: Gallery,
}

type Shared = State<Arc<App>>;

impl IntoResponse for StudioError {
    fn into_response(self) -> Response {
        let status = match &self {
            StudioError::BadRequest(_) | StudioError::Library(_) => StatusCode::BAD_REQUEST,
            StudioError::NotFound(_) => StatusCode::NOT_FOUND,
            StudioError::Outside(_) => StatusCode::FORBIDDEN,
            StudioError::Conflict(_) => StatusCode::CONFLICT,
            StudioError::Io { .. } | StudioError::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// The router of the app.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route("/style.css", get(|| async { asset(STYLE_CSS, "text/css") }))
        .route("/api/info", get(info))
        .route("/api/runs", get(list_runs).post(create_run))
        .route("/api/runs/{name}", get(run_detail))
        .route("/api/runs/{name}/events", get(run_events))
        .route("/api/runs/{name}/stop", post(stop_run))
        .route("/api/runs/{name}/resume", post(resume_run))
        .route("/api/inspect", post(inspect))
        .route("/api/caption", post(caption))
        .route("/api/estimate", post(estimate))
        .route("/api/models", get(models))
        .route("/api/gallery", get(gallery))
        .route("/api/generate", post(generate))
        .route("/api/compare", get(compare))
        .route("/files/{*path}", get(run_file))
        .route("/input", get(input_file))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

/// Refuses requests without the token (or from another Host, or POSTs without the token
/// header), sets the cookie on the first visit, and adds headers that keep the token in
/// this page: no referrer to other sites, no framing, no caching.
async fn guard(State(app): Shared, req: Request, next: Next) -> Response {
    let proof = match app
        .gate
        .check(req.method(), req.uri().query(), req.headers())
    {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if proof == Proof::Query {
        h.insert(header::SET_COOKIE, app.gate.cookie());
    }
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn asset(text: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], text).into_response()
}

async fn index(State(app): Shared) -> Response {
    // The page calls the API with the token in a header (a POST needs it there).
    let page = INDEX_HTML.replace("{{TOKEN}}", app.gate.token());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn info(State(app): Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "runs": app.roots.runs(),
        "samplers": SAMPLERS,
        "methods": ["styleforge", "multi-styleforge", "dreambooth", "lora",
                    "textual-inversion", "custom-diffusion"],
    }))
}

async fn list_runs(State(app): Shared) -> Json<Vec<runs::RunView>> {
    let root = app.roots.runs();
    Json(
        runs::discover(root)
            .iter()
            .map(|n| runs::view(root, n, app.jobs.is_live(n), usize::MAX))
            .collect(),
    )
}

/// The run `name`, which must exist.
fn existing(app: &App, name: &str) -> Result<PathBuf> {
    newrun::check_name(name).map_err(|_| StudioError::NotFound(format!("no run {name}")))?;
    let root = app.roots.runs().join(name);
    if runs::is_run(&root) {
        Ok(root)
    } else {
        Err(StudioError::NotFound(format!("no run {name}")))
    }
}

async fn run_detail(State(app): Shared, UrlPath(name): UrlPath<String>) -> Result<Response> {
    existing(&app, &name)?;
    let v = runs::view(app.roots.runs(), &name, app.jobs.is_live(&name), 0);
    Ok(Json(v).into_response())
}

/// Server-sent events: the run's view whenever it changes, with only the new loss points
/// after the first event (`reset` says the page should drop what it has).
async fn run_events(State(app): Shared, UrlPath(name): UrlPath<String>) -> Result<Response> {
    existing(&app, &name)?;
    struct Cursor {
        app: Arc<App>,
        name: String,
        sent: Option<usize>,
        last: String,
    }
    let start = Cursor {
        app,
        name,
        sent: None,
        last: String::new(),
    };
    let stream = futures_util::stream::unfold(start, |mut c| async move {
        loop {
            if c.sent.is_some() {
                tokio::time::sleep(POLL).await;
            }
            let live = c.app.jobs.is_live(&c.name);
            let runs = c.app.roots.runs();
            let skip = c.sent.unwrap_or(0);
            let mut v = runs::view(runs, &c.name, live, skip);
            // A resumed run cuts its log back to the checkpoint: start the curve again.
            let reset = c.sent.is_none() || v.logged < skip;
            if reset && skip > 0 {
                v = runs::view(runs, &c.name, live, 0);
            }
            let mut key = v.clone();
            key.points.clear();
            let key = serde_json::to_string(&key).unwrap_or_default();
            if reset || key != c.last || !v.points.is_empty() {
                c.sent = Some(v.logged);
                c.last = key;
                let mut event = serde_json::to_value(&v).unwrap_or_default();
                event["reset"] = reset.into();
                let text = format!("data: {event}\n\n");
                return Some((Ok::<_, Infallible>(text), c));
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn create_run(State(app): Shared, Json(form): Json<NewRunForm>) -> Result<Response> {
    let runs_dir = app.roots.runs();
    let (cfg, _) = form.resolved(runs_dir)?;
    let root = runs_dir.join(&form.name);
    if root.exists() {
        return Err(StudioError::Conflict(format!(
            "{} already exists in the runs folder: choose another name",
            form.name
        )));
    }
    let studio = StudioFiles::of(&root);
    std::fs::create_dir_all(studio.dir()).map_err(StudioError::io(studio.dir()))?;
    let text = format!(
        "# Written by styleforge studio; run it again with\n# styleforge train --config {}\n{}",
        studio.config().display(),
        newrun::to_toml(&cfg)?
    );
    std::fs::write(studio.config(), text).map_err(StudioError::io(studio.config()))?;
    let plan = runs::Resume {
        config: studio.config(),
        cwd: None,
    };
    app.jobs
        .start_training(&app.exe, &form.name, &root, &plan, false)?;
    let v = runs::view(runs_dir, &form.name, true, 0);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn stop_run(State(app): Shared, UrlPath(name): UrlPath<String>) -> Result<Response> {
    let root = existing(&app, &name)?;
    app.jobs.stop(&name, &root)?;
    Ok(Json(serde_json::json!({ "stopping": name })).into_response())
}

async fn resume_run(State(app): Shared, UrlPath(name): UrlPath<String>) -> Result<Response> {
    let root = existing(&app, &name)?;
    let plan = runs::resume_plan(&root)?;
    let run = styleforge::RunDir::new(&root);
    let has_checkpoint = !styleforge::training::checkpoint::list(&run.checkpoints()).is_empty();
    app.jobs
        .start_training(&app.exe, &name, &root, &plan, has_checkpoint)?;
    Ok(Json(runs::view(app.roots.runs(), &name, true, 0)).into_response())
}

#[derive(Deserialize)]
struct InspectForm {
    dir: String,
    #[serde(default = "default_resolution")]
    resolution: u32,
    #[serde(default = "default_min_images")]
    min_images: usize,
}

fn default_resolution() -> u32 {
    512
}

fn default_min_images() -> usize {
    2
}

async fn inspect(State(app): Shared, Json(form): Json<InspectForm>) -> Result<Response> {
    let dir = PathBuf::from(form.dir.trim());
    let found = tokio::task::spawn_blocking(move || {
        newrun::inspect(&dir, form.resolution.max(1), form.min_images)
    })
    .await
    .map_err(|e| StudioError::BadRequest(e.to_string()))??;
    app.roots.allow_input(found.dir.clone());
    Ok(Json(found).into_response())
}

#[derive(Deserialize)]
struct CaptionForm {
    path: PathBuf,
    caption: String,
}

async fn caption(State(app): Shared, Json(form): Json<CaptionForm>) -> Result<Response> {
    let image = app.roots.input_image(&form.path)?;
    newrun::write_caption(&image, &form.caption)?;
    Ok(Json(serde_json::json!({ "saved": image })).into_response())
}

async fn estimate(State(app): Shared, Json(form): Json<NewRunForm>) -> Result<Response> {
    let (_, resolved) = form.resolved(app.roots.runs())?;
    let est = tokio::task::spawn_blocking(move || newrun::memory_estimate(&resolved))
        .await
        .map_err(|e| StudioError::BadRequest(e.to_string()))?;
    Ok(Json(est).into_response())
}

async fn models(State(app): Shared) -> Json<Vec<serde_json::Value>> {
    let root = app.roots.runs();
    let mut out = Vec::new();
    for name in runs::discover(root) {
        let v = runs::view(root, &name, app.jobs.is_live(&name), usize::MAX);
        if v.has_model && v.state != runs::RunState::Running {
            out.push(serde_json::json!({
                "id": format!("run:{name}"),
                "label": format!("{name} ({})", v.method.unwrap_or_default()),
            }));
        }
    }
    Json(out)
}

async fn gallery(State(app): Shared) -> Json<Vec<crate::gallery::Entry>> {
    Json(app.gallery.list())
}

async fn generate(State(app): Shared, Json(form): Json<GenerateForm>) -> Result<Response> {
    let entry = app.gallery.generate(&app.exe, app.roots.runs(), form)?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

#[derive(Deserialize)]
struct CompareQuery {
    #[serde(default)]
    runs: String,
}

async fn compare(State(app): Shared, Query(q): Query<CompareQuery>) -> Response {
    let names: Vec<String> = q
        .runs
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Json(crate::compare::compare(app.roots.runs(), &names)).into_response()
}

async fn send_file(path: PathBuf) -> Result<Response> {
    let bytes = tokio::task::spawn_blocking({
        let path = path.clone();
        move || std::fs::read(&path)
    })
    .await
    .map_err(|e| StudioError::BadRequest(e.to_string()))?
    .map_err(StudioError::io(&path))?;
    Ok(([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response())
}

async fn run_file(State(app): Shared, UrlPath(rel): UrlPath<String>) -> Result<Response> {
    let path = app.roots.in_runs(&rel)?;
    if !path.is_file() {
        return Err(StudioError::NotFound(format!("no file {rel}")));
    }
    send_file(path).await
}

#[derive(Deserialize)]
struct InputQuery {
    path: PathBuf,
}

async fn input_file(State(app): Shared, Query(q): Query<InputQuery>) -> Result<Response> {
    let path = app.roots.input_image(&q.path)?;
    send_file(path).await
}
