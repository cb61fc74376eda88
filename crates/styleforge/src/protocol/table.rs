//! The protocol's result tables: one model ([`Report`]: titled tables of labelled rows ×
//! metric columns, then notes) and one renderer for each format. The real-image protocol's
//! comparison table and the toy world's tables are both instances of it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use styleforge_models::files;

use crate::error::{Error, Result};
use crate::evaluation::report::escape_html;

/// A metric column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The Markdown header (`FID ↓ cubism`).
    pub name: String,
    /// The HTML group header it sits under (`FID ↓`), with [`Self::short`] below it;
    /// `None` for a one-row header.
    pub group: Option<String>,
    /// The HTML header under its group (`cubism`).
    pub short: String,
    /// What the column measures (the HTML header's tooltip and the Markdown legend).
    pub tip: Option<String>,
    /// Decimals shown.
    pub decimals: usize,
    /// Whether lower values are better (for marking the best value).
    pub lower_is_better: bool,
}

impl Column {
    /// A column with a one-row header.
    pub fn new(name: impl Into<String>, decimals: usize, lower_is_better: bool) -> Self {
        let name = name.into();
        Self {
            short: name.clone(),
            name,
            group: None,
            tip: None,
            decimals,
            lower_is_better,
        }
    }

    /// The same column with a tooltip.
    pub fn tip(mut self, tip: impl Into<String>) -> Self {
        self.tip = Some(tip.into());
        self
    }

    /// The same column under the HTML group header `group`, shown as `short` below it
    /// (its Markdown header stays [`Self::name`]).
    pub fn grouped(mut self, group: impl Into<String>, short: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self.short = short.into();
        self
    }

    fn format(&self, x: f64) -> String {
        format!("{x:.*}", self.decimals)
    }
}

/// A labelled row of values, one per column (`None`: not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row label (a method).
    pub label: String,
    /// The values.
    pub values: Vec<Option<f64>>,
}

/// One table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Its heading (a `##` section); `None` for a report's only table.
    pub title: Option<String>,
    /// The HTML `id` of the table.
    pub id: Option<String>,
    /// The label column's header.
    pub label_header: String,
    /// The metric columns.
    pub columns: Vec<Column>,
    /// The rows.
    pub rows: Vec<Row>,
    /// Mark the best value of each column (bold) when there are several rows.
    pub mark_best: bool,
    /// Right-align the metric columns in Markdown.
    pub align_right: bool,
}

impl Table {
    /// The best value of each column.
    pub fn best(&self) -> Vec<Option<f64>> {
        (0..self.columns.len())
            .map(|j| {
                let lower = self.columns[j].lower_is_better;
                self.rows
                    .iter()
                    .filter_map(|r| r.values.get(j).copied().flatten())
                    .reduce(|a, b| if (b < a) == lower { b } else { a })
            })
            .collect()
    }

    fn is_best(&self, v: f64, best: Option<f64>) -> bool {
        self.mark_best && self.rows.len() > 1 && Some(v) == best
    }
}

/// What follows the tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The columns of the first table with their tips (Markdown only; HTML headers carry
    /// the tips).
    Legend,
    /// A picture beside the report: `alt` in Markdown, `heading` above it in HTML.
    Image {
        /// Markdown alt text.
        alt: String,
        /// HTML heading.
        heading: String,
        /// The file, relative to the report.
        file: String,
    },
    /// A list of links (HTML only): `heading`, then `text — <a href>link</a>` items.
    Links {
        /// HTML heading.
        heading: String,
        /// `(text, href, link text)`.
        items: Vec<(String, String, String)>,
    },
}

/// A protocol's result: tables and notes, rendered by [`render_markdown`] and
/// [`render_html`]; [`Report::json`] is written as the machine-readable result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The page title.
    pub title: String,
    /// The paragraph under the title (Markdown).
    pub intro: String,
    /// The paragraph under the title in HTML (plain text); default: [`Self::intro`].
    pub html_intro: Option<String>,
    /// The tables.
    pub tables: Vec<Table>,
    /// What follows them.
    pub notes: Vec<Note>,
    /// The machine-readable result: the `.json` file's text ([`to_json`]).
    pub json: String,
}

/// The files a report was written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `<stem>.md`.
    pub markdown: PathBuf,
    /// `<stem>.html`.
    pub html: PathBuf,
    /// `<stem>.json`.
    pub json: PathBuf,
}

impl ReportFiles {
    /// The three files of `stem` in `dir`.
    pub fn new(dir: &Path, stem: &str) -> Self {
        Self {
            markdown: dir.join(format!("{stem}.md")),
            html: dir.join(format!("{stem}.html")),
            json: dir.join(format!("{stem}.json")),
        }
    }
}

/// Encodes a result as the report's JSON text (pretty-printed, fields in their declared
/// order).
pub fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        what: "the protocol's result".into(),
        source,
    })
}

/// Writes `report` as `<stem>.md`, `<stem>.html` and `<stem>.json` in `dir`, each
/// atomically.
pub fn write_report(dir: &Path, stem: &str, report: &Report) -> Result<ReportFiles> {
    let out = ReportFiles::new(dir, stem);
    files::write(&out.markdown, render_markdown(report))?;
    files::write(&out.html, render_html(report))?;
    files::write(&out.json, &report.json)?;
    Ok(out)
}

/// The report as Markdown: the best value per column in bold where the table marks it.
pub fn render_markdown(report: &Report) -> String {
    let mut s = format!("# {}\n\n{}\n\n", report.title, report.intro);
    for t in &report.tables {
        if let Some(title) = &t.title {
            s.push_str(&format!("## {title}\n\n"));
        }
        s.push_str(&format!("| {} |", t.label_header));
        for c in &t.columns {
            s.push_str(&format!(" {} |", c.name));
        }
        s.push_str("\n|---|");
        let sep = if t.align_right { "---:|" } else { "---|" };
        s.push_str(&sep.repeat(t.columns.len()));
        s.push('\n');
        let best = t.best();
        for row in &t.rows {
            s.push_str(&format!("| {} |", row.label));
            for ((v, b), c) in row.values.iter().zip(&best).zip(&t.columns) {
                match v {
                    Some(x) if t.is_best(*x, *b) => s.push_str(&format!(" **{}** |", c.format(*x))),
                    Some(x) => s.push_str(&format!(" {} |", c.format(*x))),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        if t.title.is_some() {
            s.push('\n');
        }
    }
    for note in &report.notes {
        match note {
            Note::Legend => {
                let Some(t) = report.tables.first() else {
                    continue;
                };
                let items: Vec<String> = t
                    .columns
                    .iter()
                    .map(|c| match &c.tip {
                        Some(tip) => format!("**{}**: {tip}", c.name),
                        None => format!("**{}**", c.name),
                    })
                    .collect();
                s.push_str(&format!("Columns: {}.\n", items.join("; ")));
            }
            Note::Image { alt, file, .. } => s.push_str(&format!("\n![{alt}]({file})\n")),
            Note::Links { .. } => {}
        }
    }
    s
}

const CSS: &str =
    "body{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}\
table{border-collapse:collapse;background:#fff;margin-bottom:1.5em}\
th,td{border:1px solid #ddd;padding:.35rem .6rem;text-align:right}\
th:first-child,td:first-child{text-align:left}\
thead th{background:#f0f0f0}td.best{font-weight:700;background:#eef7ee}\
img{image-rendering:pixelated;max-width:100%}";

/// The report as a self-contained HTML page: grouped headers where columns have groups,
/// tips as header tooltips, the best value per column marked `class="best"`.
pub fn render_html(report: &Report) -> String {
    let title = escape_html(&report.title);
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{CSS}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let intro = report.html_intro.as_ref().unwrap_or(&report.intro);
    h.push_str(&format!("<p>{}</p>\n", escape_html(intro)));
    for t in &report.tables {
        if let Some(title) = &t.title {
            h.push_str(&format!("<h2>{}</h2>\n", escape_html(title)));
        }
        match &t.id {
            Some(id) => h.push_str(&format!("<table id=\"{}\"><thead>", escape_html(id))),
            None => h.push_str("<table><thead>"),
        }
        html_header(&mut h, t);
        h.push_str("</thead><tbody>\n");
        let best = t.best();
        for row in &t.rows {
            h.push_str(&format!("<tr><td>{}</td>", escape_html(&row.label)));
            for ((v, b), c) in row.values.iter().zip(&best).zip(&t.columns) {
                match v {
                    Some(x) if t.is_best(*x, *b) => {
                        h.push_str(&format!("<td class=\"best\">{}</td>", c.format(*x)))
                    }
                    Some(x) => h.push_str(&format!("<td>{}</td>", c.format(*x))),
                    None => h.push_str("<td>–</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }
    for note in &report.notes {
        match note {
            Note::Legend => {}
            Note::Image { heading, file, alt } => h.push_str(&format!(
                "<h2>{}</h2>\n<img src=\"{}\" alt=\"{}\">\n",
                escape_html(heading),
                escape_html(file),
                escape_html(alt)
            )),
            Note::Links { heading, items } => {
                h.push_str(&format!("<h2>{}</h2>\n<ul>\n", escape_html(heading)));
                for (text, href, link) in items {
                    h.push_str(&format!(
                        "<li>{} — <a href=\"{}\">{}</a></li>\n",
                        escape_html(text),
                        escape_html(href),
                        escape_html(link)
                    ));
                }
                h.push_str("</ul>\n");
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn th(c: &Column, text: &str) -> String {
    match &c.tip {
        Some(tip) => format!(
            "<th title=\"{}\">{}</th>",
            escape_html(tip),
            escape_html(text)
        ),
        None => format!("<th>{}</th>", escape_html(text)),
    }
}

/// One header row, or two when columns are grouped (consecutive columns of one group
/// share a spanning cell).
fn html_header(h: &mut String, t: &Table) {
    let label = escape_html(&t.label_header);
    if t.columns.iter().all(|c| c.group.is_none()) {
        h.push_str(&format!("<tr><th>{label}</th>"));
        for c in &t.columns {
            h.push_str(&th(c, &c.name));
        }
        h.push_str("</tr>");
        return;
    }
    h.push_str(&format!("<tr><th rowspan=\"2\">{label}</th>"));
    let mut i = 0;
    while i < t.columns.len() {
        let group = t.columns[i].group.clone();
        let span = t.columns[i..]
            .iter()
            .take_while(|c| c.group == group)
            .count();
        let text = group.unwrap_or_else(|| t.columns[i].name.clone());
        h.push_str(&format!(
            "<th colspan=\"{span}\">{}</th>",
            escape_html(&text)
        ));
        i += span;
    }
    h.push_str("</tr><tr>");
    for c in &t.columns {
        h.push_str(&th(c, &c.short));
    }
    h.push_str("</tr>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mark_best: bool) -> Report {
        Report {
            title: "T".into(),
            intro: "intro".into(),
            html_intro: None,
            tables: vec![Table {
                title: None,
                id: Some("protocol".into()),
                label_header: "method".into(),
                columns: vec![
                    Column::new("FID ↓ a", 3, true).grouped("FID ↓", "a"),
                    Column::new("CLIP ↑ a", 3, false).grouped("CLIP ↑", "a"),
                ],
                rows: vec![
                    Row {
                        label: "x".into(),
                        values: vec![Some(2.0), Some(1.0)],
                    },
                    Row {
                        label: "y".into(),
                        values: vec![Some(1.0), None],
                    },
                ],
                mark_best,
                align_right: false,
            }],
            notes: vec![Note::Legend],
            json: String::new(),
        }
    }

    #[test]
    fn the_best_value_per_column_is_marked_in_both_formats() {
        let md = render_markdown(&report(true));
        assert!(md.starts_with("# T\n\nintro\n\n| method | FID ↓ a | CLIP ↑ a |\n|---|---|---|\n"));
        assert!(
            md.contains("| x | 2.000 | **1.000** |\n| y | **1.000** | – |\n"),
            "{md}"
        );
        assert!(
            md.ends_with("Columns: **FID ↓ a**; **CLIP ↑ a**.\n"),
            "{md}"
        );
        let html = render_html(&report(true));
        assert!(html.contains("<th colspan=\"1\">FID ↓</th>"), "{html}");
        assert_eq!(html.matches("class=\"best\"").count(), 2, "{html}");
        assert!(!render_markdown(&report(false)).contains("**1.000**"));
    }
}
