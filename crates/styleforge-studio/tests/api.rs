//! Every endpoint of the studio over real HTTP, without a browser: the token rules (missing,
//! wrong, cookie, POST header), the Host check, refused traversal, and each page's API. The
//! trainer and generator are a stand-in script (a `train` that waits to be stopped, a
//! `generate` that copies a picture), so this runs in seconds; the real binary is driven
//! end to end by the CLI crate's browser test.
// The stand-in trainer is a shell script.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use styleforge_studio::{Studio, StudioOptions};

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

struct Server {
    addr: SocketAddr,
    token: String,
    runs: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// A raw HTTP/1.1 request; `headers` replace the defaults of the same name.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        let host = self.host();
        let defaults = [("host", host.as_str()), ("connection", "close")];
        for (k, v) in defaults {
            if !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) {
                req += &format!("{k}: {v}\r\n");
            }
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        if !body.is_empty() {
            req += &format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            );
        }
        req += "\r\n";
        req += body;
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        parse(&raw)
    }

    fn get(&self, path: &str) -> Reply {
        let t = format!("x-styleforge-token: {}", self.token);
        let (k, v) = t.split_once(": ").unwrap();
        self.send("GET", path, &[(k, v)], "")
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            "POST",
            path,
            &[("x-styleforge-token", &self.token)],
            &body.to_string(),
        )
    }
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out += &rest[..n];
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A stand-in for the `styleforge` binary: `train` waits to be stopped, `generate` copies
/// `picture.png` to its `--out`.
fn fake_exe(dir: &Path) -> PathBuf {
    let picture = dir.join("picture.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .save(&picture)
        .unwrap();
    let exe = dir.join("fake-styleforge");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  train) echo \"step 0/3 | $* | in $(pwd -P)\"; exec sleep 60 ;;\n  \
             generate) while [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=\"$2\"; shift; done; \
             cp '{}' \"$out\" ;;\nesac\n",
            picture.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    exe
}

fn start() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let exe = fake_exe(tmp.path());
    let studio = Studio::bind(&StudioOptions::new(&runs, 0, exe)).unwrap();
    let addr = studio.local_addr().unwrap();
    let token = studio.token().to_string();
    assert!(studio.url().ends_with(&format!("/?token={token}")));
    assert!(studio.url().starts_with("http://127.0.0.1:"));
    std::thread::spawn(move || studio.serve().unwrap());
    Server {
        addr,
        token,
        runs: runs.canonicalize().unwrap(),
        _tmp: tmp,
    }
}

fn toy_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/toy/base-model")
        .canonicalize()
        .unwrap()
}

/// A style folder: `n` good 64-pixel pictures, one too small, one that is not an image.
fn style_folder(root: &Path, n: usize) -> PathBuf {
    let dir = root.join("style");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        image::RgbImage::from_pixel(64, 64, image::Rgb([i as u8 * 40, 90, 160]))
            .save(dir.join(format!("img-{i}.png")))
            .unwrap();
    }
    image::RgbImage::new(8, 8)
        .save(dir.join("tiny.png"))
        .unwrap();
    std::fs::write(dir.join("broken.jpg"), b"no jpeg").unwrap();
    dir
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_request_needs_the_token_and_the_right_host() {
    let s = start();
    let t = &s.token;
    assert_eq!(s.send("GET", "/", &[], "").status, 401);
    assert_eq!(s.send("GET", "/api/runs", &[], "").status, 401);
    assert_eq!(s.send("GET", "/?token=0000", &[], "").status, 401);
    assert_eq!(
        s.send("GET", "/", &[("cookie", "styleforge_token_1=abc")], "")
            .status,
        401
    );
    // The printed URL: the page, with the cookie for later requests.
    let page = s.send("GET", &format!("/?token={t}"), &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("StyleForge Studio"));
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    let cookie = page.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let kv = cookie.split(';').next().unwrap().to_string();
    for path in ["/", "/app.js", "/style.css", "/api/runs", "/api/info"] {
        assert_eq!(
            s.send("GET", path, &[("cookie", &kv)], "").status,
            200,
            "{path}"
        );
    }
    // DNS rebinding: the right token from a name that is not this server.
    for host in ["evil.example:80", "evil.example", "localhost:1", "10.1.2.3"] {
        let r = s.send("GET", &format!("/?token={t}"), &[("host", host)], "");
        assert_eq!(r.status, 403, "{host}");
    }
    let local = format!("localhost:{}", s.addr.port());
    assert_eq!(
        s.send("GET", &format!("/?token={t}"), &[("host", &local)], "")
            .status,
        200
    );
    // A change needs the token in the header: the cookie (which a cross-site form would
    // carry) and the query are not enough.
    let body = json!({"dir": "/"}).to_string();
    for headers in [vec![("cookie", kv.as_str())], vec![]] {
        let r = s.send("POST", &format!("/api/inspect?token={t}"), &headers, &body);
        assert_eq!(r.status, 403);
    }
    assert_eq!(
        s.send(
            "POST",
            "/api/inspect",
            &[("x-styleforge-token", "bad")],
            &body
        )
        .status,
        403
    );
    assert_eq!(
        s.send("DELETE", "/api/runs", &[("x-styleforge-token", t)], "")
            .status,
        405
    );
    assert_eq!(s.get("/api/nothing").status, 404);
}

#[test]
fn files_are_served_only_from_the_runs_folder_and_chosen_inputs() {
    let s = start();
    let run = s.runs.join("a");
    std::fs::create_dir_all(run.join("studio")).unwrap();
    std::fs::write(run.join("loss.png"), b"png").unwrap();
    let outside = s.runs.parent().unwrap().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, run.join("link.txt")).unwrap();

    let ok = s.get("/files/a/loss.png");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type").as_deref(), Some("image/png"));
    for bad in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/a/..%2f..%2fsecret.txt",
        "/files/%2fetc%2fpasswd",
        "/files/a/link.txt",
    ] {
        let r = s.get(bad);
        assert!(
            r.status == 403 || r.status == 404,
            "{bad}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("secret\n") && r.body != "secret",
            "{bad} leaked"
        );
    }
    assert_eq!(s.get("/files/a/nothing.png").status, 404);

    // Input pictures: only from a folder the user checked on the New style page.
    let style = style_folder(s.runs.parent().unwrap(), 2);
    let img = style.join("img-0.png");
    let url = format!("/input?path={}", img.display());
    assert_eq!(s.get(&url).status, 403);
    let r = s.post("/api/inspect", json!({"dir": style, "resolution": 32}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get(&url).status, 200);
    let txt = format!("/input?path={}", outside.display());
    assert_eq!(s.get(&txt).status, 403);
    let escaped = format!("/input?path={}/../secret.txt", style.display());
    assert_eq!(s.get(&escaped).status, 403);
}

#[test]
fn new_style_page_checks_images_edits_captions_and_estimates_memory() {
    let s = start();
    let style = style_folder(s.runs.parent().unwrap(), 3);
    let r = s.post("/api/inspect", json!({"dir": style, "resolution": 32}));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["usable"], 3);
    let problems: Vec<(&str, &str)> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| Some((i["file"].as_str()?, i["problem"].as_str()?)))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems
        .iter()
        .any(|(f, p)| *f == "tiny.png" && p.contains("8x8")));
    assert!(problems.iter().any(|(f, _)| *f == "broken.jpg"));
    // Too few for the trainer at a higher resolution: said for the folder.
    let v = s
        .post("/api/inspect", json!({"dir": style, "resolution": 128}))
        .json();
    assert_eq!(v["usable"], 0);
    assert!(v["problems"][0].as_str().unwrap().contains("at least 2"));
    let missing = s.post("/api/inspect", json!({"dir": "/no/such/folder"}));
    assert_eq!(missing.status, 400);

    let img = style.join("img-1.png");
    let r = s.post(
        "/api/caption",
        json!({"path": img, "caption": "a red house"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        std::fs::read_to_string(style.join("img-1.txt")).unwrap(),
        "a red house\n"
    );
    let elsewhere = s.runs.parent().unwrap().join("picture.png");
    let r = s.post("/api/caption", json!({"path": elsewhere, "caption": "x"}));
    assert_eq!(r.status, 403);

    let form = json!({"name": "est", "base": toy_base(), "method": "styleforge",
        "style_dir": style, "steps": 10, "resolution": 32});
    let e = s.post("/api/estimate", form.clone());
    assert_eq!(e.status, 200, "{}", e.body);
    let peak = e.json()["peak_gb"].as_f64().unwrap();
    assert!(peak > 0.0 && peak < 5.0, "{peak}");
    let mut bad = form.clone();
    bad["steps"] = json!(0);
    let e = s.post("/api/estimate", bad);
    assert_eq!(e.status, 400);
    assert!(e.json()["error"].as_str().unwrap().contains("steps"));
    let mut hub = form;
    hub["base"] = json!("owner/model");
    let e = s.post("/api/estimate", hub).json();
    assert!(
        e["peak_gb"].is_null()
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("when the run starts")
    );
}

#[test]
fn runs_are_started_watched_stopped_resumed_and_found_again() {
    let s = start();
    let style = style_folder(s.runs.parent().unwrap(), 3);
    let form = json!({"name": "cel", "base": toy_base(), "method": "styleforge",
        "style_dir": style, "steps": 3, "resolution": 32, "seed": 7,
        "validate_every": 1, "checkpoint_every": 2, "num_aux_images": 2, "sampling_steps": 2,
        "batch_size": 2});
    for (name, status) in [("../x", 400), ("gallery", 400), (".hidden", 400)] {
        let mut f = form.clone();
        f["name"] = json!(name);
        assert_eq!(s.post("/api/runs", f).status, status, "{name}");
    }
    let mut multi = form.clone();
    multi["method"] = json!("multi-styleforge");
    assert_eq!(s.post("/api/runs", multi).status, 400);

    let r = s.post("/api/runs", form.clone());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["state"], "running");
    assert_eq!(s.post("/api/runs", form.clone()).status, 409);
    // The config a command-line user would write, readable by `styleforge train`.
    let toml_path = s.runs.join("cel/studio/train.toml");
    let cfg = styleforge::training::TrainConfig::from_file(&toml_path).unwrap();
    assert_eq!(cfg.optim.steps, Some(3));
    assert_eq!(cfg.optim.batch_size, Some(2));
    assert_eq!(cfg.data.resolution, Some(32));
    assert_eq!(
        cfg.output.dir.as_deref(),
        Some(s.runs.join("cel").as_path())
    );
    assert_eq!(cfg.data.concepts[0].style_dir, style);
    cfg.resolve().unwrap();

    let list = s.get("/api/runs").json();
    assert_eq!(list[0]["name"], "cel");
    assert_eq!(list[0]["state"], "running");
    wait_for("the trainer's output", || {
        s.get("/api/runs/cel").json()["status"]
            .as_str()
            .is_some_and(|l| l.starts_with("step 0/3"))
    });
    assert_eq!(s.get("/api/runs/nope").status, 404);
    assert_eq!(s.get("/api/runs/..%2f..").status, 404);

    // The event stream: the first event at once, with the whole view.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/runs/cel/events HTTP/1.1\r\nhost: {}\r\nx-styleforge-token: {}\r\n\r\n",
        s.host(),
        s.token
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("\n\n{") && !got.contains("data: {") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed: {got}");
        got += &String::from_utf8_lossy(&buf[..n]);
    }
    while !got.contains("}\n\n") {
        let n = stream.read(&mut buf).unwrap();
        got += &String::from_utf8_lossy(&buf[..n]);
    }
    assert!(got.contains("text/event-stream"), "{got}");
    let data = &got[got.find("data: ").unwrap() + 6..];
    let event: Value = serde_json::from_str(&data[..data.find("\n\n").unwrap()]).unwrap();
    assert_eq!(event["reset"], true);
    assert_eq!(event["state"], "running");
    drop(stream);

    assert_eq!(s.post("/api/runs/cel/resume", json!({})).status, 409);
    let r = s.post("/api/runs/cel/stop", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the stop", || {
        s.get("/api/runs/cel").json()["state"] == "stopped"
    });
    assert_eq!(s.post("/api/runs/cel/stop", json!({})).status, 409);
    let r = s.post("/api/runs/cel/resume", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "running");
    s.post("/api/runs/cel/stop", json!({}));
    wait_for("the second stop", || {
        s.get("/api/runs/cel").json()["state"] == "stopped"
    });

    // A restarted studio finds the run from its folder.
    let exe = s.runs.parent().unwrap().join("fake-styleforge");
    let again = Studio::bind(&StudioOptions::new(&s.runs, 0, exe)).unwrap();
    let addr = again.local_addr().unwrap();
    let token = again.token().to_string();
    std::thread::spawn(move || again.serve().unwrap());
    let s2 = Server {
        addr,
        token,
        runs: s.runs.clone(),
        _tmp: tempfile::tempdir().unwrap(),
    };
    let list = s2.get("/api/runs").json();
    assert_eq!(list[0]["name"], "cel");
    assert_eq!(list[0]["state"], "stopped");
    assert_eq!(list[0]["resumable"], true);
}

#[test]
fn a_run_started_from_the_command_line_shows_its_stop_and_resumes_from_its_folder() {
    let s = start();
    // `styleforge train` started in the runs folder's parent with `output.dir =
    // "runs/cli"`, stopped at step 2 with a checkpoint: its folder holds no studio files.
    let root = s.runs.join("cli");
    let style = style_folder(s.runs.parent().unwrap(), 3);
    let text = format!(
        "method = \"styleforge\"\n[model]\nbase = {:?}\n[[data.concepts]]\nstyle_dir = {:?}\n\
         [optim]\nsteps = 6\n[output]\ndir = \"runs/cli\"\n",
        toy_base().display().to_string(),
        style.display().to_string()
    );
    let cfg = styleforge::training::TrainConfig::from_toml(&text, Path::new("t.toml"))
        .unwrap()
        .resolve()
        .unwrap();
    std::fs::create_dir_all(root.join("checkpoints/step-0000002")).unwrap();
    std::fs::write(root.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    std::fs::write(root.join("checkpoints/step-0000002/state.json"), "{}").unwrap();
    std::fs::write(
        root.join("stopped.json"),
        r#"{"step": 2, "reason": "requested"}"#,
    )
    .unwrap();
    let v = s.get("/api/runs/cli").json();
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["stopped_at"], 2, "{v}");
    assert_eq!(v["resumable"], true, "{v}");

    let r = s.post("/api/runs/cli/resume", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let expect = format!(
        "train --config {} --resume | in {}",
        root.join("config.toml").display(),
        s.runs.parent().unwrap().display()
    );
    wait_for("the trainer's output", || {
        s.get("/api/runs/cli").json()["status"]
            .as_str()
            .is_some_and(|l| l.ends_with(&expect))
    });
    s.post("/api/runs/cli/stop", json!({}));
    wait_for("the stop", || {
        s.get("/api/runs/cli").json()["state"] == "stopped"
    });

    // A folder whose config writes elsewhere (moved, or copied) is not resumed blindly.
    let moved = s.runs.join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::copy(root.join("config.toml"), moved.join("config.toml")).unwrap();
    let r = s.post("/api/runs/moved/resume", json!({}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("runs/cli"), "{}", r.body);
}

#[test]
fn generate_keeps_a_gallery_and_compare_reads_reports() {
    let s = start();
    assert_eq!(s.get("/api/models").json(), json!([]));
    let form = json!({"model": "run:missing", "prompt": "a house", "steps": 2,
        "guidance": 3.0, "seed": 5});
    assert_eq!(s.post("/api/generate", form.clone()).status, 404);
    let mut bad = form.clone();
    bad["sampler"] = json!("nope");
    bad["model"] = json!("somewhere");
    assert_eq!(s.post("/api/generate", bad).status, 400);
    let mut bad = form.clone();
    bad["model"] = json!(toy_base());
    bad["guidance_rescale"] = json!(1.5);
    let r = s.post("/api/generate", bad);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("guidance rescale"), "{}", r.body);
    let mut ok = form;
    ok["model"] = json!(toy_base());
    ok["sampler"] = json!("euler_a");
    ok["negative"] = json!("blurry");
    ok["guidance_rescale"] = json!(0.7);
    let r = s.post("/api/generate", ok);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_for("the picture", || {
        s.get("/api/gallery").json()[0]["state"] == "done"
    });
    let entry = &s.get("/api/gallery").json()[0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["params"]["negative"], "blurry");
    assert_eq!(entry["params"]["guidance_rescale"], 0.7);
    let picture = s.get(entry["image"].as_str().unwrap());
    assert_eq!(picture.status, 200);
    assert!(s.runs.join(format!("gallery/{id}.json")).is_file());

    // Compare: a run with an eval report inside it.
    let eval = s.runs.join("r1/eval");
    std::fs::create_dir_all(&eval).unwrap();
    std::fs::create_dir_all(s.runs.join("r1/studio")).unwrap();
    std::fs::write(eval.join("metrics.json"), r#"{"fid": 3.5}"#).unwrap();
    let cols = s.get("/api/compare?runs=r1,nope,..").json();
    assert_eq!(cols.as_array().unwrap().len(), 1);
    assert_eq!(cols[0]["reports"][0]["metrics"][0], json!(["fid", 3.5]));
    assert_eq!(s.get("/api/compare").json(), json!([]));
    let info = s.get("/api/info").json();
    assert!(info["samplers"]
        .as_array()
        .unwrap()
        .contains(&json!("ddim")));
}
