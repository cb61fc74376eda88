//! The evaluation's files: `metrics.json` and a self-contained `report.html` with a
//! `thumbs/` folder of small PNG thumbnails (relative links, no external assets, so the
//! folder can be moved or zipped whole).
//!
//! The page: the metric table (`<table id="metrics">`), warnings, the generated and
//! reference thumbnails side by side (`<section id="generated">`, `<section
//! id="reference">`), CLIP-T per prompt with a thumbnail each (`<table id="clip-t">`), and
//! the settings. A small inline script sets `data-images-loaded` on `<body>` to the number of
//! `<img>` that decoded, beside `data-images-total`, so a headless browser can check the
//! thumbnails really load.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{EvalImage, EvalInputs, EvalResult};
use crate::error::{Error, Result};
use crate::image_io::save_png;

/// Longest side of a thumbnail, in pixels.
pub const THUMB_SIZE: u32 = 160;

/// Most thumbnails shown per image set (the counts and metrics always cover every image).
pub const MAX_THUMBNAILS: usize = 400;

/// What [`write_outputs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `metrics.json`.
    pub metrics_json: PathBuf,
    /// `report.html`.
    pub report_html: PathBuf,
}

/// Writes `metrics.json` and `report.html` (with `thumbs/`) into `out`, creating it.
pub fn write_outputs(out: &Path, result: &EvalResult, inputs: &EvalInputs) -> Result<ReportFiles> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let metrics_json = out.join("metrics.json");
    result.save_json(&metrics_json)?;
    let generated = inputs.generated.items()?;
    let reference = inputs.reference.items()?;
    let report_html = write_report(out, result, &generated, &reference)?;
    Ok(ReportFiles {
        metrics_json,
        report_html,
    })
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn thumbnail(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = (THUMB_SIZE as f64 / w.max(h) as f64).min(1.0);
    let tw = ((w as f64 * scale).round() as u32).max(1);
    let th = ((h as f64 * scale).round() as u32).max(1);
    image::imageops::thumbnail(img, tw, th)
}

/// Writes the thumbnails of `images` as `thumbs/<prefix>-NNNN.png` (at most
/// [`MAX_THUMBNAILS`]); returns their relative paths.
fn write_thumbs(out: &Path, prefix: &str, images: &[EvalImage]) -> Result<Vec<String>> {
    images
        .iter()
        .take(MAX_THUMBNAILS)
        .enumerate()
        .map(|(i, img)| {
            let rel = format!("thumbs/{prefix}-{i:04}.png");
            save_png(&thumbnail(&img.load()?), &out.join(&rel))?;
            Ok(rel)
        })
        .collect()
}

const CSS: &str = r#"
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  background: #f6f7f9; color: #1d2330; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 28px 0 10px; }
.sub { color: #5b6472; margin: 0 0 16px; font-size: 0.9rem; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e7;
  border-radius: 6px; overflow: hidden; }
th, td { text-align: left; padding: 6px 12px; border-bottom: 1px solid #eceff3;
  vertical-align: middle; }
th { background: #eef1f5; font-weight: 600; }
td.value { font-variant-numeric: tabular-nums; font-weight: 600; white-space: nowrap; }
td.detail { color: #5b6472; }
.warnings { background: #fff8e6; border: 1px solid #f0d58c; border-radius: 6px; margin: 0;
  padding: 8px 16px 8px 32px; }
.warnings li { margin: 4px 0; }
.sets { display: grid; grid-template-columns: 1fr 1fr; gap: 20px; }
.sets section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px;
  padding: 12px; }
.sets h2 { margin-top: 0; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 120px; }
figure img, td img { width: 120px; height: 120px; object-fit: contain; background: #eceff3;
  border-radius: 4px; display: block; }
figcaption { font-size: 0.72rem; color: #5b6472; overflow-wrap: anywhere; }
.more { color: #5b6472; font-size: 0.85rem; }
@media (max-width: 800px) { .sets { grid-template-columns: 1fr; } }
"#;

const SCRIPT: &str = r#"
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.imagesLoaded = String(loaded.length);
  document.body.dataset.imagesTotal = String(imgs.length);
});
"#;

fn figure(html: &mut String, src: &str, caption: &str, title: Option<&str>) {
    let title = title.map(escape_html).unwrap_or_default();
    let _ = write!(
        html,
        r#"<figure><img src="{}" alt="{}" title="{}" loading="eager"><figcaption>{}</figcaption></figure>"#,
        escape_html(src),
        escape_html(caption),
        title,
        escape_html(caption)
    );
}

fn set_section(
    html: &mut String,
    id: &str,
    heading: &str,
    thumbs: &[String],
    records: &[super::ImageRecord],
) {
    let _ = write!(
        html,
        r#"<section id="{id}"><h2>{} ({})</h2><div class="thumbs">"#,
        escape_html(heading),
        records.len()
    );
    for (rel, rec) in thumbs.iter().zip(records) {
        let mut caption = rec.name.clone();
        for (label, value) in [
            ("CLIP-T", rec.clip_t.map(|v| format!("{v:.2}"))),
            ("CSD", rec.csd.map(|v| format!("{v:.3}"))),
            ("DINO content", rec.dino_content.map(|v| format!("{v:.3}"))),
            ("leak", rec.dino_leak.map(|v| format!("{v:.3}"))),
        ] {
            if let Some(v) = value {
                let _ = write!(caption, " · {label} {v}");
            }
        }
        figure(html, rel, &caption, rec.prompt.as_deref());
    }
    html.push_str("</div>");
    if records.len() > thumbs.len() {
        let _ = write!(
            html,
            r#"<p class="more">Showing {} of {} images.</p>"#,
            thumbs.len(),
            records.len()
        );
    }
    html.push_str("</section>");
}

/// Writes `report.html` and its `thumbs/` into `out` for `result`, whose `generated` and
/// `reference` are the images it was computed on (in the same order). Returns the page's
/// path.
pub fn write_report(
    out: &Path,
    result: &EvalResult,
    generated: &[EvalImage],
    reference: &[EvalImage],
) -> Result<PathBuf> {
    if generated.len() != result.generated.len() || reference.len() != result.reference.len() {
        return Err(Error::InvalidRequest(format!(
            "the report's images ({} generated, {} reference) are not the evaluated ones ({}, {})",
            generated.len(),
            reference.len(),
            result.generated.len(),
            result.reference.len()
        )));
    }
    let gen_thumbs = write_thumbs(out, "g", generated)?;
    let ref_thumbs = write_thumbs(out, "r", reference)?;
    let html = render_html(result, &gen_thumbs, &ref_thumbs);
    let path = out.join("report.html");
    styleforge_models::files::write(&path, html)?;
    Ok(path)
}

/// The page's HTML, given the thumbnails' relative paths (generated and reference, in
/// order; fewer than the images when capped).
pub fn render_html(result: &EvalResult, gen_thumbs: &[String], ref_thumbs: &[String]) -> String {
    let mut h = String::new();
    let n_img = gen_thumbs.len()
        + ref_thumbs.len()
        + result
            .clip_t_per_prompt
            .iter()
            .filter(|p| p.first_image < gen_thumbs.len())
            .count();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>StyleForge evaluation</title>
<style>{CSS}</style>
<script>{SCRIPT}</script>
</head>
<body data-images-total="{n_img}"><main>
<h1>StyleForge evaluation</h1>
<p class="sub">{} generated vs {} reference images · styleforge {} · {}</p>
"#,
        result.counts.generated,
        result.counts.reference,
        escape_html(&result.version),
        escape_html(&result.timestamp)
    );

    h.push_str(r#"<h2>Metrics</h2><table id="metrics"><thead><tr><th>metric</th><th>value</th><th>computed on</th></tr></thead><tbody>"#);
    for row in result.metric_rows() {
        let _ = write!(
            h,
            r#"<tr id="metric-{}" data-metric="{}"><th>{}</th><td class="value">{}</td><td class="detail">{}</td></tr>"#,
            row.id,
            row.id,
            escape_html(row.name),
            escape_html(&row.value),
            escape_html(&row.detail)
        );
    }
    h.push_str("</tbody></table>\n");
    h.push_str(
        r#"<p class="sub">FID, KID: lower is closer to the reference set. CLIP-T: higher follows the content prompt better (0–100). CLIP-I: higher is closer to the reference images (cosine, −1–1). CSD style: higher is closer to the references' style, whatever their subjects (cosine); its CSLS form discounts images close to everything. DINO content: higher keeps the content reference's subject. DINO leak: lower copies less of the references' subjects.</p>"#,
    );

    if !result.warnings.is_empty() {
        h.push_str(r#"<h2>Warnings</h2><ul class="warnings" id="warnings">"#);
        for w in &result.warnings {
            let _ = write!(h, "<li>{}</li>", escape_html(w));
        }
        h.push_str("</ul>\n");
    }

    h.push_str(r#"<div class="sets">"#);
    set_section(
        &mut h,
        "generated",
        "Generated",
        gen_thumbs,
        &result.generated,
    );
    set_section(
        &mut h,
        "reference",
        "Reference",
        ref_thumbs,
        &result.reference,
    );
    h.push_str("</div>\n");

    if !result.clip_t_per_prompt.is_empty() {
        h.push_str(r#"<h2>CLIP-T per prompt</h2><table id="clip-t"><thead><tr><th>example</th><th>prompt</th><th>content prompt (scored)</th><th>images</th><th>CLIP-T</th></tr></thead><tbody>"#);
        for p in &result.clip_t_per_prompt {
            let thumb = gen_thumbs
                .get(p.first_image)
                .map(|src| {
                    format!(
                        r#"<img src="{}" alt="{}">"#,
                        escape_html(src),
                        escape_html(&result.generated[p.first_image].name)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                r#"<tr><td>{thumb}</td><td>{}</td><td>{}</td><td class="value">{}</td><td class="value">{:.4}</td></tr>"#,
                escape_html(&p.prompt),
                escape_html(&p.content_prompt),
                p.images,
                p.clip_t
            );
        }
        h.push_str("</tbody></table>\n");
    }

    let s = &result.settings;
    let mut settings: Vec<(&str, String)> = vec![
        ("generated", s.generated.clone()),
        ("reference", s.reference.clone()),
        ("prompts", s.prompts.clone()),
        ("resize", s.resize.clone()),
        ("batch size", s.batch_size.to_string()),
        ("KID subsets", s.kid_subsets.to_string()),
        (
            "KID subset size",
            s.kid_subset_size
                .map_or("min(n, 1000)".to_string(), |v| v.to_string()),
        ),
        ("seed", s.seed.to_string()),
        (
            "feature cache",
            s.cache
                .as_ref()
                .map_or("off".to_string(), |p| p.display().to_string()),
        ),
        ("style tokens", s.style_tokens.join(" ")),
        ("device", s.device.clone()),
    ];
    if let Some(c) = &s.content {
        settings.insert(2, ("content references", c.clone()));
    }
    for (name, m) in [
        ("Inception", &result.models.inception),
        ("CLIP", &result.models.clip),
        ("CSD", &result.models.csd),
        ("DINO", &result.models.dino),
    ] {
        if let Some(m) = m {
            settings.push((
                name,
                format!(
                    "{} (fingerprint {}, {}; {} extracted, {} cached)",
                    m.path.display(),
                    m.id.fingerprint,
                    m.id.settings,
                    m.extraction.extracted,
                    m.extraction.cached
                ),
            ));
        }
    }
    h.push_str(r#"<h2>Settings</h2><table id="settings"><tbody>"#);
    for (name, value) in settings {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(name),
            escape_html(&value)
        );
    }
    h.push_str("</tbody></table>\n</main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn thumbnails_keep_the_aspect_ratio() {
        let t = thumbnail(&RgbImage::new(640, 320));
        assert_eq!(t.dimensions(), (THUMB_SIZE, THUMB_SIZE / 2));
        let small = thumbnail(&RgbImage::new(20, 10));
        assert_eq!(small.dimensions(), (20, 10));
    }
}
