//! `styleforge eval` end to end: the binary on tiny data (the tiny CLIP fixture, an FID
//! InceptionV3 with deterministic random weights), then `report.html` rendered in headless
//! Chromium to check the tables are there and every thumbnail really loads.
//!
//! The browser is `$CHROME`, else `chromium`, `chromium-browser` or `google-chrome` on
//! PATH. Without one the browser part is skipped with a message, unless
//! `STYLEFORGE_REQUIRE_BROWSER=1` (as `.ci/run` sets), which makes it a failure.

#[path = "../../styleforge/tests/support/eval_data.rs"]
mod eval_data;

use std::path::Path;
use std::process::{Command, Output};

use eval_data::{clip_fixture, random_inception_weights, write_images};

mod browser;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_styleforge"))
        .env("RAYON_NUM_THREADS", "2")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(&url)
        .output()
        .expect("the browser runs");
    assert!(
        o.status.success(),
        "{} failed: {}",
        browser.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value of `attr="..."` on the `<body>` tag.
fn body_attr(dom: &str, attr: &str) -> Option<String> {
    let start = dom.find("<body")?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("{attr}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// The text between `<tag ... id="id"` and the next `</tag>`.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in the DOM"));
    let end = dom[start..].find(&format!("</{tag}>")).unwrap() + start;
    &dom[start..end]
}

#[test]
fn eval_writes_a_report_that_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let (gen, reference, out) = (
        tmp.path().join("gen"),
        tmp.path().join("ref"),
        tmp.path().join("out"),
    );
    write_images(
        &gen,
        10,
        &[
            Some("a house, ohwx style"),
            Some("a <s1> tree"),
            Some("a house, ohwx style"),
        ],
    );
    write_images(&reference, 20, &[None, None]);
    let inception = random_inception_weights();
    let clip = clip_fixture();
    let style = clip.join("../style");
    let (csd, dino) = (style.join("csd.safetensors"), style.join("dinov2"));
    let content = reference.join("img-00.png");
    let cache = tmp.path().join("cache");
    let o = run(&[
        "eval",
        "--generated",
        gen.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--inception",
        inception.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
        "--csd",
        csd.to_str().unwrap(),
        "--dino",
        dino.to_str().unwrap(),
        "--content",
        content.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--kid-subsets",
        "10",
        "--seed",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    for name in [
        "FID",
        "KID",
        "CLIP-T",
        "CLIP-I",
        "CSD style",
        "CSD style (CSLS)",
        "DINO content",
        "DINO leak",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "stdout lacks {name}: {stdout}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for key in ["fid", "csd", "dino_content", "dino_leak"] {
        assert!(json["metrics"][key].is_f64(), "{key}: {json}");
    }
    assert!(json["metrics"]["csd_csls"]["mean"].is_f64(), "{json}");
    assert!(json["generated"][0]["csd"].is_f64(), "{json}");
    assert_eq!(json["settings"]["seed"], 3);
    assert_eq!(json["counts"]["generated"], 3);
    let report = out.join("report.html");
    assert!(report.is_file());

    // Bad input is an error that says what to do.
    let o = run(&[
        "eval",
        "--generated",
        gen.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--inception"));

    let Some(browser) = browser::browser_or_skip() else {
        return;
    };
    let dom = dump_dom(&browser, &report, &tmp.path().join("chromium-profile"));
    let metrics = element(&dom, "table", "metrics");
    for id in [
        "fid",
        "kid",
        "clip-t",
        "clip-i",
        "csd",
        "csd-csls",
        "dino-content",
        "dino-leak",
    ] {
        let row = format!("id=\"metric-{id}\"");
        assert!(
            metrics.contains(&row),
            "metrics table lacks {row}: {metrics}"
        );
    }
    assert!(!metrics.contains(">skipped<"), "{metrics}");
    assert_eq!(
        element(&dom, "section", "generated")
            .matches("<img")
            .count(),
        3
    );
    assert_eq!(
        element(&dom, "section", "reference")
            .matches("<img")
            .count(),
        2
    );
    assert_eq!(element(&dom, "table", "clip-t").matches("<img").count(), 2);
    let total = body_attr(&dom, "data-images-total").expect("data-images-total");
    let loaded = body_attr(&dom, "data-images-loaded")
        .expect("data-images-loaded set by the page's load handler");
    assert_eq!(total, "7");
    assert_eq!(loaded, total, "not every thumbnail loaded");
}
