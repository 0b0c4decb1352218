//! The page: the report's sections in order, as self-contained HTML and as Markdown, and the
//! files they are written to.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use exvit_common::write_bytes_atomic;

use crate::collect::{Inputs, Run};
use crate::figures::{figures, Figure};
use crate::tables::{tables, Table};
use crate::ReportError;

/// Report settings.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Title.
    pub title: String,
    /// The model the others are compared with (default: the first run's).
    pub baseline: Option<String>,
    /// Free text put under the title (what was run, on what).
    pub intro: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { title: "exvit report".into(), baseline: None, intro: String::new() }
    }
}

/// The report's sections, in page order. Each table belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// The models table, first on the page.
    Models,
    /// The figures.
    Figures,
    /// Analyses: paired comparisons, linear probes.
    Analyses,
    /// Provenance: per-run commits, configs and hardware.
    Provenance,
}

/// A rendered report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The HTML page.
    pub html: String,
    /// The Markdown page (figures linked as `<stem>_figures/<id>.svg`).
    pub markdown: String,
    /// The figures.
    pub figures: Vec<Figure>,
}

/// Runs grouped by model, in order of first appearance.
fn by_model(runs: &[Run]) -> Vec<(String, Vec<&Run>)> {
    let mut out: Vec<(String, Vec<&Run>)> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|(m, _)| *m == r.model) {
            Some((_, v)) => v.push(r),
            None => out.push((r.model.clone(), vec![r])),
        }
    }
    out
}

/// Renders the report.
pub fn render(inputs: &Inputs, opts: &ReportOptions) -> Result<Report, ReportError> {
    let mut models = by_model(&inputs.runs);
    if let Some(b) = &opts.baseline {
        if let Some(i) = models.iter().position(|(m, _)| m == b) {
            let base = models.remove(i);
            models.insert(0, base);
        }
    }
    // One colour per model: the runs' models in table order, then models that only have probes.
    let mut colour_order: Vec<&str> = models.iter().map(|(m, _)| m.as_str()).collect();
    let later = inputs.probes.iter().map(|p| &p.model).chain(inputs.attention.iter().map(|a| &a.model));
    for m in later {
        if !colour_order.contains(&m.as_str()) {
            colour_order.push(m);
        }
    }
    let color_of = |model: &str| -> usize { colour_order.iter().position(|m| *m == model).unwrap_or(0) };
    let figures = figures(inputs, &models, &color_of)?;
    let tables = tables(inputs, &models, opts);
    Ok(Report {
        html: html(inputs, opts, &figures, &tables),
        markdown: markdown(inputs, opts, &figures, &tables),
        figures,
    })
}

fn in_section(tables: &[Table], section: Section) -> impl Iterator<Item = &Table> {
    tables.iter().filter(move |t| t.section == section)
}

/// `s` escaped for HTML text and attribute values (SVG too).
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(inputs: &Inputs, opts: &ReportOptions, figures: &[Figure], tables: &[Table]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\n<style>\
body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 12px;color:#222}}\
svg{{max-width:100%;height:auto}}.scroll{{overflow-x:auto}}p,figcaption,summary{{overflow-wrap:anywhere}}pre{{white-space:pre-wrap;word-break:break-all}}\
table{{border-collapse:collapse;margin:1em 0;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
th{{background:#f3f3f3}}figure{{margin:1.5em 0}}figcaption{{font-size:13px;color:#555}}pre{{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}}\
</style></head><body>\n<h1>{}</h1>\n",
        esc(&opts.title),
        esc(&opts.title)
    );
    if !opts.intro.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", esc(&opts.intro));
    }
    for t in in_section(tables, Section::Models) {
        table_html(&mut h, t);
    }
    if figures.is_empty() {
        h.push_str("<p>No runs, probe or attention tables were found: nothing to plot.</p>\n");
    }
    for f in figures {
        let _ = writeln!(
            h,
            "<figure id=\"fig-{}\" data-figure=\"{}\">\n{}\n<figcaption><b>{}.</b> {}</figcaption></figure>",
            esc(&f.id),
            esc(&f.id),
            f.svg,
            esc(&f.title),
            esc(&f.caption)
        );
    }
    for t in in_section(tables, Section::Analyses) {
        table_html(&mut h, t);
    }
    for t in in_section(tables, Section::Provenance) {
        table_html(&mut h, t);
    }
    for r in &inputs.runs {
        let _ = writeln!(
            h,
            "<details><summary>{} config.toml</summary><pre>{}</pre></details>",
            esc(&r.dir.display().to_string()),
            esc(&r.config_text)
        );
    }
    let _ = writeln!(
        h,
        "<p>Files read: {}.</p>",
        inputs.files.iter().map(|f| esc(&f.display().to_string())).collect::<Vec<_>>().join(", ")
    );
    h.push_str("</body></html>\n");
    h
}

fn table_html(h: &mut String, t: &Table) {
    let _ = writeln!(
        h,
        "<h2>{}</h2>\n<p>{}</p>\n<div class=\"scroll\"><table><tr>{}</tr>",
        esc(&t.title),
        esc(&t.note),
        t.header.iter().map(|c| format!("<th>{}</th>", esc(c))).collect::<String>()
    );
    for r in &t.rows {
        let _ = writeln!(h, "<tr>{}</tr>", r.iter().map(|c| format!("<td>{}</td>", esc(c))).collect::<String>());
    }
    h.push_str("</table></div>\n");
}

fn markdown(inputs: &Inputs, opts: &ReportOptions, figures: &[Figure], tables: &[Table]) -> String {
    let mut m = format!("# {}\n\n", opts.title);
    if !opts.intro.is_empty() {
        let _ = writeln!(m, "{}\n", opts.intro);
    }
    let md_table = |m: &mut String, t: &Table| {
        let _ = writeln!(m, "## {}\n\n{}\n", t.title, t.note);
        let _ = writeln!(m, "| {} |", t.header.join(" | "));
        let _ = writeln!(m, "|{}", "---|".repeat(t.header.len()));
        for r in &t.rows {
            let _ = writeln!(m, "| {} |", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
        }
        m.push('\n');
    };
    for t in in_section(tables, Section::Models) {
        md_table(&mut m, t);
    }
    for f in figures {
        let _ = writeln!(m, "![{}](FIGURES/{}.svg)\n\n*{}* {}\n", f.title, f.id, f.title, f.caption);
    }
    for t in in_section(tables, Section::Analyses) {
        md_table(&mut m, t);
    }
    for t in in_section(tables, Section::Provenance) {
        md_table(&mut m, t);
    }
    let _ = writeln!(
        m,
        "Files read: {}.",
        inputs.files.iter().map(|f| format!("`{}`", f.display())).collect::<Vec<_>>().join(", ")
    );
    m
}

/// Writes `html_path`, the Markdown beside it (`.md`) and the figures as SVG files in
/// `<stem>_figures/`, each through a temporary file and a rename. Returns the Markdown path.
pub fn write_report(report: &Report, html_path: &Path) -> Result<PathBuf, ReportError> {
    let dir = html_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let stem = html_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    let fig_dir_name = format!("{stem}_figures");
    let fig_dir = dir.join(&fig_dir_name);
    std::fs::create_dir_all(&fig_dir).map_err(|source| ReportError::Io { path: fig_dir.clone(), source })?;
    for f in &report.figures {
        write_bytes_atomic(&fig_dir.join(format!("{}.svg", f.id)), f.svg.as_bytes())?;
    }
    let md_path = html_path.with_extension("md");
    write_bytes_atomic(&md_path, report.markdown.replace("](FIGURES/", &format!("]({fig_dir_name}/")).as_bytes())?;
    write_bytes_atomic(html_path, report.html.as_bytes())?;
    Ok(md_path)
}
