//! Hub downloads against a small local HTTP server that speaks the Hub's URL layout:
//! a real download into a temporary cache, resume of an interrupted file, offline mode,
//! and an unknown repo.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use styleforge_models::folder::ModelFolder;
use styleforge_models::hub::{resolve, HubModel, HubOptions, RepoLayout};
use styleforge_models::source::{self, ResolveOptions};

const REPO: &str = "tiny/sd1";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd1")
}

fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, root, out);
        } else {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// The repo's files: the tiny fixture plus files that must not be fetched.
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    walk(&fixture(), &fixture(), &mut files);
    files.insert("README.md".into(), b"# tiny".to_vec());
    files.insert("unet/diffusion_pytorch_model.bin".into(), vec![7; 64]);
    files.insert("v1-5-pruned.ckpt".into(), vec![9; 64]);
    files
}

fn etag(data: &[u8]) -> String {
    // FNV-1a, enough to name blobs distinctly.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", data.len())
}

#[derive(Default)]
struct Log {
    /// (path, Range header) of every request.
    requests: Vec<(String, Option<String>)>,
}

struct Server {
    url: String,
    log: Arc<Mutex<Log>>,
    /// Files whose next full (non-probe) download is cut off halfway.
    cut: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve() -> Server {
    serve_repo(REPO, repo_files())
}

/// Serves `files` as the Hub repo `repo` (revision `main` = [`SHA`]).
fn serve_repo(repo: &'static str, files: BTreeMap<String, Vec<u8>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let cut = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let files = Arc::new(files);
    let (l2, c2, s2) = (log.clone(), cut.clone(), stop.clone());
    std::thread::spawn(move || {
        // Bounded: at most a minute, and never past the test.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (files, log, cut) = (files.clone(), l2.clone(), c2.clone());
                    std::thread::spawn(move || handle(repo, stream, &files, &log, &cut));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server {
        url,
        log,
        cut,
        stop,
    }
}

fn handle(
    repo: &str,
    stream: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    log: &Mutex<Log>,
    cut: &Mutex<Vec<String>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_string());
                }
            }
        }
        log.lock()
            .unwrap()
            .requests
            .push((path.clone(), range.clone()));
        let info_prefix = format!("/api/models/{repo}/revision/");
        let resolve_prefix = format!("/{repo}/resolve/");
        if let Some(rev) = path.strip_prefix(&info_prefix) {
            if rev != "main" && rev != SHA {
                respond(&mut out, 404, &[], b"Revision not found");
                continue;
            }
            let siblings: Vec<String> = files
                .keys()
                .map(|k| format!("{{\"rfilename\":\"{k}\"}}"))
                .collect();
            let body = format!(
                "{{\"id\":\"{repo}\",\"sha\":\"{SHA}\",\"siblings\":[{}]}}",
                siblings.join(",")
            );
            respond(
                &mut out,
                200,
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            );
        } else if let Some(rest) = path.strip_prefix(&resolve_prefix) {
            let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
            let Some(data) = files.get(file).filter(|_| rev == "main" || rev == SHA) else {
                respond(
                    &mut out,
                    404,
                    &[("X-Error-Code", "EntryNotFound".into())],
                    b"",
                );
                continue;
            };
            let total = data.len();
            let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                Some(r) => {
                    let (a, b) = r.split_once('-').unwrap();
                    let a: usize = a.parse().unwrap();
                    let b: usize = if b.is_empty() {
                        total - 1
                    } else {
                        b.parse::<usize>().unwrap().min(total - 1)
                    };
                    (a, b)
                }
                None => (0, total - 1),
            };
            let body = &data[start..=end];
            let headers = vec![
                ("X-Repo-Commit", SHA.to_string()),
                ("ETag", format!("\"{}\"", etag(data))),
                ("Accept-Ranges", "bytes".into()),
                ("Content-Range", format!("bytes {start}-{end}/{total}")),
            ];
            let probe = end == start && start == 0 && range.is_some();
            let cut_now = !probe && {
                let mut c = cut.lock().unwrap();
                let hit = c.iter().position(|f| f == file);
                hit.map(|i| c.remove(i)).is_some()
            };
            if cut_now {
                // Announce the whole body, send half, hang up.
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nX-Repo-Commit: {SHA}\r\nContent-Range: bytes {start}-{end}/{total}\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(head.as_bytes());
                let _ = out.write_all(&body[..body.len() / 2]);
                let _ = out.flush();
                return;
            }
            let status = if range.is_some() { 206 } else { 200 };
            respond(&mut out, status, &headers, body);
        } else {
            respond(&mut out, 404, &[], b"not found");
        }
    }
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
}

fn opts(server: &Server, home: &Path) -> HubOptions {
    HubOptions {
        home: Some(home.to_path_buf()),
        endpoint: Some(server.url.clone()),
        ..HubOptions::default()
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn downloads_into_the_hf_cache_layout_and_resumes() {
    let server = serve();
    let home = tempfile::tempdir().unwrap();
    let weights = "unet/diffusion_pytorch_model.safetensors";
    server.cut.lock().unwrap().push(weights.to_string());
    let model = HubModel::parse(REPO).unwrap();

    // The first try is cut off in the UNet weights: an error, the part file kept.
    let err = resolve(&model, &opts(&server, home.path()));
    assert!(err.is_err(), "the cut download should fail");
    let repo_dir = home.path().join("hub/models--tiny--sd1");
    let parts: Vec<_> = all_files(&repo_dir.join("blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");

    // The second resumes from the part file.
    let snapshot = resolve(&model, &opts(&server, home.path())).unwrap();
    assert_eq!(snapshot, repo_dir.join("snapshots").join(SHA));
    let resumed = server.log.lock().unwrap().requests.iter().any(|(p, r)| {
        p.ends_with(weights)
            && r.as_deref()
                .is_some_and(|r| r != "bytes=0-0" && r != "bytes=0-")
    });
    assert!(resumed, "no ranged request resumed the part file");

    // The standard layout, every needed file identical, nothing else fetched.
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        SHA
    );
    let mut want = BTreeMap::new();
    walk(&fixture(), &fixture(), &mut want);
    assert!(want.len() > 5, "{} fixture files", want.len());
    for (name, data) in &want {
        if name.contains('/') || name == "model_index.json" {
            assert_eq!(&std::fs::read(snapshot.join(name)).unwrap(), data, "{name}");
        } else {
            // Root files other than model_index.json are not the pipeline's.
            assert!(!snapshot.join(name).exists(), "{name} fetched");
        }
    }
    assert!(!snapshot.join("README.md").exists());
    assert!(!snapshot.join("unet/diffusion_pytorch_model.bin").exists());
    assert!(!snapshot.join("v1-5-pruned.ckpt").exists());
    for f in all_files(&repo_dir.join("blobs")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains('.'), "leftover {name}");
    }
    ModelFolder::open(&snapshot).unwrap();

    // A second resolve downloads nothing.
    let before = server.log.lock().unwrap().requests.len();
    assert_eq!(
        resolve(&model, &opts(&server, home.path())).unwrap(),
        snapshot
    );
    let after = server.log.lock().unwrap().requests.len();
    assert_eq!(after - before, 1, "only the repo info is asked for");

    // Offline: the cache answers, even with the server gone.
    let offline = HubOptions {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..opts(&server, home.path())
    };
    assert_eq!(resolve(&model, &offline).unwrap(), snapshot);
    // The one model-argument resolver takes the same route.
    let local = source::resolve(
        REPO,
        &ResolveOptions {
            hub: offline.clone(),
            ..ResolveOptions::default()
        },
    )
    .unwrap();
    assert_eq!(local.path, snapshot);
    assert!(local.is_hub() && !local.is_single_file());
    let pinned = HubModel::parse(&format!("{REPO}@{SHA}")).unwrap();
    assert_eq!(
        resolve(&pinned, &opts(&server, home.path())).unwrap(),
        snapshot
    );
}

#[test]
fn offline_without_cache_and_unknown_repos_fail_clearly() {
    let server = serve();
    let home = tempfile::tempdir().unwrap();
    let offline = HubOptions {
        offline: true,
        ..opts(&server, home.path())
    };
    let err = resolve(&HubModel::parse(REPO).unwrap(), &offline)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");

    let err = resolve(
        &HubModel::parse("nobody/nothing").unwrap(),
        &opts(&server, home.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not found") && err.contains("404"), "{err}");
    let err = resolve(
        &HubModel::parse(&format!("{REPO}@nope")).unwrap(),
        &opts(&server, home.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("404"), "{err}");
    // Nothing was written for them.
    let hub = home.path().join("hub");
    assert!(!hub.exists() || all_files(&hub).is_empty());
}

#[test]
fn a_component_subset_fetches_only_those_folders() {
    let server = serve();
    let home = tempfile::tempdir().unwrap();
    let only = HubOptions {
        components: Some(vec!["tokenizer".into()]),
        ..opts(&server, home.path())
    };
    let snapshot = resolve(&HubModel::parse(REPO).unwrap(), &only).unwrap();
    assert!(snapshot.join("tokenizer/vocab.json").is_file());
    assert!(snapshot.join("model_index.json").is_file());
    assert!(!snapshot.join("unet").exists());
    assert!(!snapshot.join("text_encoder").exists());
    styleforge_models::tokenizer::ClipTokenizer::from_folder(&snapshot).unwrap();
    // and offline, the tokenizer alone is enough
    let offline = HubOptions {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..only
    };
    assert_eq!(
        resolve(&HubModel::parse(REPO).unwrap(), &offline).unwrap(),
        snapshot
    );
}

#[test]
fn transformers_repos_fetch_root_configs_and_safetensors_only() {
    let clip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip-tiny");
    let mut files = BTreeMap::new();
    walk(&clip, &clip, &mut files);
    files.insert("pytorch_model.bin".into(), vec![7; 64]);
    files.insert("flax_model.msgpack".into(), vec![8; 64]);
    files.insert("README.md".into(), b"# clip".to_vec());
    let server = serve_repo("openai/clip-tiny", files);
    let home = tempfile::tempdir().unwrap();
    let clip_opts = HubOptions {
        layout: RepoLayout::Transformers,
        ..opts(&server, home.path())
    };
    let model = HubModel::parse("openai/clip-tiny").unwrap();
    let snapshot = resolve(&model, &clip_opts).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        assert!(snapshot.join(f).is_file(), "{f} missing");
    }
    for f in ["pytorch_model.bin", "flax_model.msgpack", "README.md"] {
        assert!(!snapshot.join(f).exists(), "{f} fetched");
    }
    styleforge_models::clip_vision::ClipModel::load(&snapshot, &candle_core::Device::Cpu).unwrap();
    let offline = HubOptions {
        offline: true,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..clip_opts.clone()
    };
    assert_eq!(resolve(&model, &offline).unwrap(), snapshot);
    // A diffusers repo asked for as a transformers one is refused clearly.
    let sd = serve();
    let err = resolve(
        &HubModel::parse(REPO).unwrap(),
        &HubOptions {
            layout: RepoLayout::Transformers,
            ..opts(&sd, home.path())
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a transformers model"), "{err}");
}
