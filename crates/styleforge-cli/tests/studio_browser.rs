//! `styleforge studio` end to end in headless Chromium, driven over the DevTools protocol:
//! a style created from a folder of toy-world pictures on the toy base model, a short run
//! watched to its last step (the loss chart growing live, without a reload), a picture
//! generated from the result, and the comparison page. A screenshot of each page is
//! written to `target/studio-screenshots/`. Beside it, without a browser: a real run
//! stopped from the studio and resumed from its checkpoint to the end.
//!
//! The browser is `$CHROME`, else `chromium`, `chromium-browser` or `google-chrome` on
//! PATH. Without one the test is skipped with a message, unless
//! `STYLEFORGE_REQUIRE_BROWSER=1` (as `.ci/run` sets), which makes it a failure.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use styleforge::toy::data::{style_ref_samples, write_samples, CaptionText, Composition};
use styleforge::world::Style;
use tungstenite::{Message, WebSocket};

mod browser;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal DevTools-protocol client: one page, commands answered in order.
struct DevTools {
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
}

impl DevTools {
    /// Starts the browser headless and opens one page.
    fn launch(browser: &Path, profile: &Path) -> (Killed, Self) {
        let mut child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the browser starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the browser prints its DevTools address")
                .unwrap();
            if let Some(at) = line.find("ws://") {
                break line[at..].trim().to_string();
            }
        };
        // Keep draining stderr so the browser never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let child = Killed(child);
        let hostport = url["ws://".len()..].split('/').next().unwrap().to_string();
        let stream = TcpStream::connect(&hostport).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut dt = Self {
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = dt.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = dt.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        dt.session = attached["sessionId"].as_str().unwrap().to_string();
        dt.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        );
        (child, dt)
    }

    /// Sends a command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().expect("DevTools answers") else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page (promises awaited) and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{js}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `js` is truthy, evaluating it every 100 ms.
    fn wait(&mut self, what: &str, js: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(js);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            if start.elapsed() > limit {
                let page = self.eval("document.body.innerText");
                panic!("timed out waiting for {what}; the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait(
            "the page",
            "document.readyState === 'complete' && !!document.body.dataset.page",
            Duration::from_secs(20),
        );
    }

    fn screenshot(&mut self, path: &Path) {
        // The whole page, not only the window.
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let clip =
            json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        );
        let bytes = base64_decode(r["data"].as_str().unwrap());
        std::fs::write(path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Sets form fields by id and fires their change events.
fn fill(dt: &mut DevTools, fields: &[(&str, String)]) {
    for (id, value) in fields {
        let js = format!(
            "(() => {{ const e = document.getElementById({id:?}); e.value = {value:?}; \
             e.dispatchEvent(new Event('change')); return true; }})()"
        );
        dt.eval(&js);
    }
}

#[test]
fn studio_trains_watches_generates_and_compares_in_a_browser() {
    let Some(browser) = browser::browser_or_skip() else {
        return;
    };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../studio-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let style = tmp.path().join("style");
    let samples = style_ref_samples(Style::Cel, Composition::Mixed, 4, 9001);
    write_samples(&style, &samples, CaptionText::Content).unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/toy/base-model")
        .canonicalize()
        .unwrap();
    let runs = tmp.path().join("runs");

    let mut server = Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .args(["studio", "--port", "0", "--runs"])
        .arg(&runs)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = server.stdout.take().unwrap();
    let _server = Killed(server);
    let mut out = BufReader::new(out);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // Keep reading, so the server never writes to a closed pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:") && w.contains("?token="))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let origin = url.split("/?").next().unwrap().to_string();

    let (_browser, mut dt) = DevTools::launch(&browser, &tmp.path().join("profile"));
    dt.navigate(&url);
    assert_eq!(dt.eval("document.body.dataset.page"), "runs");
    // The token left the address bar; the cookie carries it from now on.
    assert_eq!(dt.eval("location.search"), "");
    dt.screenshot(&shots.join("1-runs-empty.png"));

    // New style: the folder checked, a caption edited, the estimate shown, the run started.
    dt.eval("location.hash = '#new'");
    dt.wait(
        "the form",
        "document.getElementById('start')",
        Duration::from_secs(10),
    );
    let steps = 8;
    fill(
        &mut dt,
        &[
            ("name", "cel".into()),
            ("base", base.display().to_string()),
            ("style_dir", style.display().to_string()),
            ("steps", steps.to_string()),
            ("lr", "1e-4".into()),
            ("resolution", "32".into()),
            ("validate_every", "4".into()),
            ("checkpoint_every", "4".into()),
            ("num_aux_images", "2".into()),
            ("sampling_steps", "2".into()),
        ],
    );
    // Checked again at the resolution typed after the folder.
    dt.wait(
        "the image check",
        "document.getElementById('image-summary')?.textContent === '4 of 4 images usable'",
        Duration::from_secs(20),
    );
    // Multi-StyleForge's second folder is checked the same way; back to StyleForge.
    fill(
        &mut dt,
        &[
            ("method", "multi-styleforge".into()),
            ("style_dir2", style.display().to_string()),
        ],
    );
    dt.wait(
        "the second folder's check",
        "document.getElementById('image-summary2')?.textContent === '4 of 4 images usable'",
        Duration::from_secs(20),
    );
    fill(&mut dt, &[("method", "styleforge".into())]);
    dt.wait(
        "the second folder put aside",
        "!document.getElementById('image-summary2') && document.getElementById('style_dir2').disabled",
        Duration::from_secs(20),
    );
    dt.wait(
        "the thumbnails",
        "(imgs => imgs.length === 4 && imgs.every(i => i.complete && i.naturalWidth > 0))\
         ([...document.querySelectorAll('#images .thumb img')])",
        Duration::from_secs(10),
    );
    dt.eval(
        "(() => { const i = document.querySelector('#images .thumb input'); i.value = 'a cel person'; \
         i.dispatchEvent(new Event('change')); return true; })()",
    );
    dt.wait(
        "the caption saved",
        "document.querySelector('#images .thumb input').style.borderColor !== ''",
        Duration::from_secs(10),
    );
    assert_eq!(
        std::fs::read_to_string(style.join("img_0000.txt")).unwrap(),
        "a cel person\n"
    );
    let estimate = dt.wait(
        "the memory estimate",
        "(t => t.includes('GB') && t)(document.getElementById('estimate').textContent)",
        Duration::from_secs(20),
    );
    assert!(estimate.as_str().unwrap().contains("peak"), "{estimate}");
    dt.screenshot(&shots.join("2-new-style.png"));
    dt.eval("document.getElementById('start').click()");
    dt.wait(
        "the run page",
        "location.hash === '#run/cel' && document.getElementById('step')",
        Duration::from_secs(20),
    );
    assert!(runs.join("cel/studio/train.toml").is_file());

    // The live view: the chart grows as steps are logged, pushed by the server (the page
    // is never reloaded: a marker set now survives to the end).
    dt.eval("window.notReloaded = true");
    let mut seen = std::collections::BTreeSet::new();
    let mut mid_shot = false;
    let limit = Instant::now() + Duration::from_secs(150);
    loop {
        let v = dt.eval(
            "({ points: Number(document.getElementById('chart')?.dataset.points || 0), \
               state: document.getElementById('state')?.textContent, \
               step: document.getElementById('step')?.textContent, \
               kept: window.notReloaded === true })",
        );
        assert_eq!(v["kept"], true, "the page reloaded");
        let points = v["points"].as_u64().unwrap();
        seen.insert(points);
        if points > 0 && !mid_shot {
            dt.screenshot(&shots.join("3-run-live.png"));
            mid_shot = true;
        }
        match v["state"].as_str() {
            Some("finished") => break,
            Some("failed") => {
                let log =
                    std::fs::read_to_string(runs.join("cel/studio/train.log")).unwrap_or_default();
                panic!("the run failed:\n{log}");
            }
            _ => {}
        }
        assert!(Instant::now() < limit, "the run did not finish: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    dt.wait(
        "the final view",
        &format!(
            "document.getElementById('step').textContent === '{steps} / {steps}' && \
             document.getElementById('chart').dataset.points === '{steps}' && \
             document.getElementById('latest-grid')?.complete"
        ),
        Duration::from_secs(10),
    );
    let partial: Vec<&u64> = seen.iter().filter(|&&p| p > 0 && p < steps).collect();
    assert!(
        !partial.is_empty(),
        "the chart was only ever seen with {seen:?} points: not updated live"
    );
    let grids = dt.eval("document.querySelectorAll('.grids img').length");
    assert!(grids.as_u64().unwrap() >= 2, "{grids}");
    dt.screenshot(&shots.join("4-run-finished.png"));

    // Generate from the trained model; the picture lands in the gallery with its settings.
    dt.eval("document.getElementById('generate-from').click()");
    dt.wait(
        "the generate page",
        "document.body.dataset.page === 'generate' && document.getElementById('model')?.value === 'run:cel'",
        Duration::from_secs(10),
    );
    fill(
        &mut dt,
        &[
            ("prompt", "a red person on grass by day, ohwx style".into()),
            ("gen-steps", "4".into()),
            ("sampler", "euler_a".into()),
            ("seed", "3".into()),
        ],
    );
    dt.eval("document.getElementById('go').click()");
    dt.wait(
        "the generated picture",
        "(c => c && c.dataset.state === 'done' && c.querySelector('img')?.complete && \
         c.querySelector('img').naturalWidth > 0)(document.querySelector('.card'))",
        Duration::from_secs(60),
    );
    let params = dt.eval("document.querySelector('.card').innerText");
    assert!(params.as_str().unwrap().contains("euler_a"), "{params}");
    dt.screenshot(&shots.join("5-generate.png"));
    let gallery: Vec<_> = std::fs::read_dir(runs.join("gallery")).unwrap().collect();
    assert_eq!(gallery.len(), 2, "a picture and its parameters");

    // Compare: the run's column with its settings, curve and last grid.
    dt.navigate(&format!("{origin}/#compare/cel"));
    dt.wait(
        "the comparison",
        "document.querySelector('.column[data-run=\"cel\"] svg')?.dataset.points === '8'",
        Duration::from_secs(10),
    );
    let text = dt.eval("document.getElementById('columns').innerText");
    assert!(text.as_str().unwrap().contains("styleforge"), "{text}");
    dt.screenshot(&shots.join("6-compare.png"));
    eprintln!(
        "studio browser test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A JSON request to the studio at `origin` (`http://127.0.0.1:PORT`) with its token.
fn studio_call(origin: &str, token: &str, method: &str, path: &str, body: &Value) -> Value {
    use std::io::{Read, Write};
    let host = origin.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nx-styleforge-token: {token}\r\n\
         connection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 2"),
        "{method} {path}: {head}\n{rest}"
    );
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {rest}"))
}

#[test]
fn studio_stops_a_real_run_and_resumes_it_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let style = tmp.path().join("style");
    let samples = style_ref_samples(Style::Cel, Composition::Mixed, 4, 9001);
    write_samples(&style, &samples, CaptionText::Content).unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/toy/base-model");
    let mut server = Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .args(["studio", "--port", "0", "--runs"])
        .arg(tmp.path().join("runs"))
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let _server = Killed(server);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    std::thread::spawn(move || for _ in out.lines() {});
    let url = first
        .split_whitespace()
        .find(|w| w.contains("?token="))
        .unwrap();
    let (origin, token) = url.split_once("/?token=").unwrap();
    let call =
        |method: &str, path: &str, body: Value| studio_call(origin, token, method, path, &body);
    let steps = 12;
    call(
        "POST",
        "/api/runs",
        json!({"name": "r", "base": base.canonicalize().unwrap(), "method": "styleforge",
            "style_dir": style, "steps": steps, "lr": 1e-4, "resolution": 32,
            "validate_every": 100, "checkpoint_every": 4, "num_aux_images": 2,
            "sampling_steps": 2}),
    );
    let wait = |what: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            let v = call("GET", "/api/runs/r", Value::Null);
            if ok(&v) {
                return v;
            }
            assert!(v["state"] != "failed", "the run failed: {v}");
            assert!(Instant::now() < limit, "timed out waiting for {what}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("a checkpoint", &|v| {
        v["checkpoint"].as_u64().is_some_and(|c| c >= 4)
    });
    call("POST", "/api/runs/r/stop", Value::Null);
    let stopped = wait("the stop", &|v| v["state"] == "stopped");
    // The trainer finished the step in progress and saved it: nothing is lost.
    let at = stopped["checkpoint"].as_u64().unwrap();
    assert_eq!(stopped["step"], at, "{stopped}");
    assert_eq!(stopped["stopped_at"], at, "{stopped}");
    assert!(at < steps, "{stopped}");
    assert_eq!(call("GET", "/api/runs", Value::Null)[0]["state"], "stopped");
    call("POST", "/api/runs/r/resume", Value::Null);
    let done = wait("the end", &|v| v["state"] == "finished");
    assert_eq!(done["step"], steps);
    let log = std::fs::read_to_string(tmp.path().join("runs/r/studio/train.log")).unwrap();
    assert!(
        log.contains(&format!("(step {at})")) && log.contains("resuming from"),
        "{log}"
    );
    assert!(
        log.contains(&format!("stopped at step {at}; continue with")),
        "{log}"
    );
    let logged: Vec<u64> = done["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(
        logged,
        (1..=steps).collect::<Vec<_>>(),
        "one log line per step"
    );
}
