//! The report: figures, tables and provenance, as HTML (self-contained) and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::collect::{Inputs, Run};
use crate::plot::{heatmap, line_chart, Series};
use crate::ReportError;
use exvit_train::run::Predictions;
use plotters::prelude::SeriesLabelPosition;

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

/// One figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Identifier (file stem, HTML id).
    pub id: String,
    /// Title.
    pub title: String,
    /// What it shows.
    pub caption: String,
    /// The `<svg>` element.
    pub svg: String,
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

/// `mean ± std` (sample std; 0 for one value).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

fn pm(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if v.is_empty() {
        "–".into()
    } else if v.len() == 1 {
        format!("{m:.2}")
    } else {
        format!("{m:.2} ± {s:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Position of a tap in the forward pass, for ordering a depth axis.
pub fn depth_key(tap: &str) -> f64 {
    let parts: Vec<&str> = tap.split('.').collect();
    match parts.as_slice() {
        ["stem"] => 0.0,
        ["stages", s] => s.parse::<f64>().map_or(50.0, |s| s + 1.0),
        ["stages", s, _, "transformer"] => s.parse::<f64>().map_or(50.0, |s| s + 0.5),
        ["final_conv"] => 100.0,
        ["exshortcuts", n] => 101.0 + n.parse::<f64>().unwrap_or(0.0),
        ["pooled"] => 200.0,
        _ => 150.0,
    }
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

/// Mean over runs of `f(run's rows of one epoch)` by epoch.
fn per_epoch(runs: &[&Run], kind: &str, f: impl Fn(&[&exvit_train::run::MetricRow]) -> f64) -> Vec<(f64, f64)> {
    let mut acc: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in runs {
        let mut epochs: BTreeMap<u64, Vec<&exvit_train::run::MetricRow>> = BTreeMap::new();
        for m in r.metrics.iter().filter(|m| m.kind == kind) {
            epochs.entry(m.epoch).or_default().push(m);
        }
        for (e, rows) in epochs {
            let v = f(&rows);
            if v.is_finite() {
                acc.entry(e).or_default().push(v);
            }
        }
    }
    acc.into_iter().map(|(e, v)| (e as f64 + if kind == "eval" { 1.0 } else { 0.5 }, mean_std(&v).0)).collect()
}

fn probe_label(model: &str, weights: &str) -> String {
    if weights.starts_with("init(") {
        format!("{model} (random init)")
    } else {
        format!("{model} (trained)")
    }
}

fn column_name(tap: &str, pooling: &str) -> String {
    if pooling == "gap" || pooling == "none" {
        tap.to_string()
    } else {
        format!("{tap}:{pooling}")
    }
}

/// Renders the report.
pub fn render(inputs: &Inputs, opts: &ReportOptions) -> Result<Report, ReportError> {
    let mut figures = Vec::new();
    let mut models = by_model(&inputs.runs);
    if let Some(b) = &opts.baseline {
        if let Some(i) = models.iter().position(|(m, _)| m == b) {
            let base = models.remove(i);
            models.insert(0, base);
        }
    }
    // One colour per model: the runs' models in table order, then models that only have probes.
    let mut colour_order: Vec<&str> = models.iter().map(|(m, _)| m.as_str()).collect();
    for p in &inputs.probes {
        if !colour_order.contains(&p.model.as_str()) {
            colour_order.push(&p.model);
        }
    }
    let color_of = |model: &str| -> usize { colour_order.iter().position(|m| *m == model).unwrap_or(0) };

    // Probe accuracy against depth.
    let singles: Vec<&exvit_probe::ProbeRow> = inputs.probes.iter().filter(|p| !p.tap.contains('+')).collect();
    if !singles.is_empty() {
        let mut cats: Vec<(f64, String)> = Vec::new();
        for p in &singles {
            let c = column_name(&p.tap, &p.pooling);
            if !cats.iter().any(|(_, n)| *n == c) {
                cats.push((depth_key(&p.tap), c));
            }
        }
        cats.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let names: Vec<String> = cats.into_iter().map(|(_, n)| n).collect();
        let mut groups: Vec<(String, String)> = Vec::new();
        for p in &singles {
            let g = (p.model.clone(), probe_label(&p.model, &p.weights));
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let mut series = Vec::new();
        for (model, label) in &groups {
            let mut pts = Vec::new();
            for (i, c) in names.iter().enumerate() {
                let v: Vec<f64> = singles
                    .iter()
                    .filter(|p| p.model == *model && probe_label(&p.model, &p.weights) == *label)
                    .filter(|p| column_name(&p.tap, &p.pooling) == *c)
                    .map(|p| p.top1)
                    .collect();
                if !v.is_empty() {
                    pts.push((i as f64, mean_std(&v).0));
                }
            }
            series.push(Series {
                name: label.clone(),
                color: color_of(model),
                dashed: label.ends_with("(random init)"),
                points: pts,
            });
        }
        for (model, runs) in &models {
            let head: Vec<f64> = runs.iter().filter_map(|r| r.last_eval().map(|e| e.top1)).collect();
            if !head.is_empty() && groups.iter().any(|(m, _)| m == model) {
                let y = mean_std(&head).0;
                series.push(Series {
                    name: format!("{model}: its own head (val top-1)"),
                    color: color_of(model),
                    dashed: true,
                    points: vec![(-0.3, y), (names.len() as f64 - 0.7, y)],
                });
            }
        }
        let svg = line_chart(
            "probe-depth",
            "Linear probe top-1 against depth",
            "tap (forward order)",
            "top-1 (%)",
            Some(&names),
            &series,
            None,
            SeriesLabelPosition::UpperLeft,
            (900, 560),
        )?;
        figures.push(Figure {
            id: "probe-depth".into(),
            title: "Probe accuracy against depth".into(),
            caption: "Top-1 (%) of a logistic-regression probe on each tap's pooled features (mean over seeds), trained models solid, random init dashed; the dashed horizontal lines are each trained model's own classifier on the validation split.".into(),
            svg,
        });
    }

    // CKA heatmaps: one per pair of feature sets (at most 4).
    let mut pairs: Vec<(String, String, String, String)> = Vec::new();
    for c in &inputs.cka {
        let k = (c.model_a.clone(), c.weights_a.clone(), c.model_b.clone(), c.weights_b.clone());
        if !pairs.contains(&k) {
            pairs.push(k);
        }
    }
    for (i, (ma, wa, mb, wb)) in pairs.iter().take(4).enumerate() {
        let rows: Vec<&exvit_probe::CkaRow> = inputs
            .cka
            .iter()
            .filter(|c| (&c.model_a, &c.weights_a, &c.model_b, &c.weights_b) == (ma, wa, mb, wb))
            .collect();
        let mut ra: Vec<String> = Vec::new();
        let mut cb: Vec<String> = Vec::new();
        for r in &rows {
            if !ra.contains(&r.tap_a) {
                ra.push(r.tap_a.clone());
            }
            if !cb.contains(&r.tap_b) {
                cb.push(r.tap_b.clone());
            }
        }
        let values: Vec<Vec<f64>> = ra
            .iter()
            .map(|a| {
                cb.iter()
                    .map(|b| rows.iter().find(|r| r.tap_a == *a && r.tap_b == *b).map_or(f64::NAN, |r| r.cka))
                    .collect()
            })
            .collect();
        let (la, lb) = (probe_label(ma, wa), probe_label(mb, wb));
        let title = if (ma, wa) == (mb, wb) {
            format!("Linear CKA between the taps of {la}")
        } else {
            format!("Linear CKA: {la} (rows) vs {lb} (columns)")
        };
        let id = format!("cka-{i}");
        let side = (260 + 34 * cb.len().max(ra.len())) as u32;
        let svg = heatmap(&id, &title, &ra, &cb, &values, (side + 120, side))?;
        figures.push(Figure {
            id,
            title: title.clone(),
            caption: format!(
                "Linear CKA over {} images (1 = the same representation up to rotation and scale).",
                rows.first().map_or(0, |r| r.n)
            ),
            svg,
        });
    }

    // Training curves.
    if !models.is_empty() {
        let mut loss = Vec::new();
        let mut top1 = Vec::new();
        for (model, runs) in &models {
            let c = color_of(model);
            let train = per_epoch(runs, "train", |rows| rows.iter().map(|r| r.loss).sum::<f64>() / rows.len() as f64);
            let val = per_epoch(runs, "eval", |rows| rows.last().map_or(f64::NAN, |r| r.loss));
            loss.push(Series { name: format!("{model} train"), color: c, dashed: false, points: train });
            loss.push(Series { name: format!("{model} val"), color: c, dashed: true, points: val });
            let m = per_epoch(runs, "eval", |rows| rows.last().map_or(f64::NAN, |r| r.top1));
            let e = per_epoch(runs, "eval", |rows| rows.last().map_or(f64::NAN, |r| r.ema_top1));
            top1.push(Series { name: model.to_string(), color: c, dashed: false, points: m });
            top1.push(Series { name: format!("{model} EMA"), color: c, dashed: true, points: e });
        }
        let svg = line_chart(
            "curves-loss",
            "Loss by epoch",
            "epoch",
            "cross entropy",
            None,
            &loss,
            None,
            SeriesLabelPosition::UpperRight,
            (900, 420),
        )?;
        figures.push(Figure {
            id: "curves-loss".into(),
            title: "Loss by epoch".into(),
            caption:
                "Training loss (mean over each epoch's steps, solid) and validation loss (dashed), mean over seeds."
                    .into(),
            svg,
        });
        let svg = line_chart(
            "curves-top1",
            "Validation top-1 by epoch: model and EMA",
            "epoch",
            "top-1 (%)",
            None,
            &top1,
            None,
            SeriesLabelPosition::LowerRight,
            (900, 420),
        )?;
        figures.push(Figure {
            id: "curves-top1".into(),
            title: "Validation top-1 by epoch".into(),
            caption: "Validation top-1 of the model (solid) and of its EMA (dashed), mean over seeds (the paper's Figure 4 layout: MobileViT vs ExMobileViT vs the wide-head control).".into(),
            svg,
        });
    }

    let tables = tables(inputs, &models, opts);
    Ok(Report {
        html: html(inputs, opts, &figures, &tables),
        markdown: markdown(inputs, opts, &figures, &tables),
        figures,
    })
}

/// A table: header and rows of cells.
struct Table {
    title: String,
    note: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The run of `runs` with seed `s`.
fn run_of<'a>(runs: &[&'a Run], s: u64) -> Option<&'a Run> {
    runs.iter().find(|r| r.seed == s).copied()
}

/// Resamples in the paired bootstrap over evaluation images.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Every model against the baseline, then each non-baseline model against each later one (so
/// ExMobileViT against its wide-head control): Δ top-1 with a 95% t interval over
/// seeds (paired by seed) and a 95% paired bootstrap interval over evaluation images (from the
/// runs' `predictions.parquet`). `None` with fewer than two models.
fn comparisons<'a>(models: &[(String, Vec<&'a Run>)], baseline: &str) -> Option<Table> {
    if models.len() < 2 {
        return None;
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let b = models.iter().position(|(m, _)| m == baseline);
    if let Some(b) = b {
        pairs.extend((0..models.len()).filter(|&i| i != b).map(|i| (i, b)));
    }
    let others: Vec<usize> = (0..models.len()).filter(|&i| Some(i) != b).collect();
    for (k, &j) in others.iter().enumerate() {
        pairs.extend(others[k + 1..].iter().map(|&i| (j, i)));
    }
    let fmt = |i: Option<crate::stats::Interval>| {
        i.map_or("–".to_string(), |i| format!("{:+.2} [{:+.2}, {:+.2}]", i.mean, i.lo, i.hi))
    };
    let rows = pairs
        .iter()
        .map(|&(i, j)| {
            let (ma, ra) = &models[i];
            let (mb, rb) = &models[j];
            // Seeds present on both sides, in seed order.
            let seeds: Vec<u64> = {
                let mut v: Vec<u64> = ra.iter().map(|r| r.seed).filter(|s| rb.iter().any(|r| r.seed == *s)).collect();
                v.sort();
                v.dedup();
                v
            };
            let diffs: Vec<f64> = seeds
                .iter()
                .filter_map(|&s| Some(run_of(ra, s)?.last_eval()?.top1 - run_of(rb, s)?.last_eval()?.top1))
                .collect();
            // Per-image correctness, only when every paired run has predictions on the same
            // images (same labels in the same order).
            let preds = |runs: &[&'a Run]| -> Option<Vec<&'a Predictions>> {
                seeds.iter().map(|&s| run_of(runs, s)?.predictions.as_ref()).collect()
            };
            let correct = |p: &[&Predictions]| -> Vec<Vec<bool>> {
                p.iter().map(|p| p.ranks.iter().map(|&r| r == 0).collect()).collect()
            };
            let boot = match (preds(ra), preds(rb)) {
                (Some(a), Some(b)) if !a.is_empty() && a.iter().chain(&b).all(|p| p.labels == a[0].labels) => {
                    crate::stats::paired_bootstrap(&correct(&a), &correct(&b), BOOTSTRAP_RESAMPLES, 0)
                }
                _ => None,
            };
            let mean = if diffs.is_empty() {
                "–".to_string()
            } else {
                format!("{:+.2}", diffs.iter().sum::<f64>() / diffs.len() as f64)
            };
            vec![
                format!("{ma} − {mb}"),
                seeds.len().to_string(),
                mean,
                fmt(crate::stats::t_interval(&diffs)),
                fmt(boot),
            ]
        })
        .collect();
    Some(Table {
        title: "Paired comparisons".into(),
        note: format!(
            "Δ top-1 (points) between two models trained with the same seeds. Over seeds: the mean of the per-seed differences and its 95% t interval (df = seeds − 1; it measures training noise, and is wide with few seeds). Over images: a paired bootstrap over the evaluation images ({BOOTSTRAP_RESAMPLES} resamples) of the per-image difference averaged over the seeds, 2.5–97.5 percentiles (it measures the finite test set, with the seeds held fixed). An interval that excludes 0 on both counts is evidence of a difference."
        ),
        header: ["comparison", "seeds", "Δ top-1", "95% CI over seeds", "95% CI over images (bootstrap)"]
            .map(String::from)
            .to_vec(),
        rows,
    })
}

fn tables(inputs: &Inputs, models: &[(String, Vec<&Run>)], opts: &ReportOptions) -> Vec<Table> {
    let mut out = Vec::new();
    if !models.is_empty() {
        let baseline = opts.baseline.clone().unwrap_or_else(|| models[0].0.clone());
        let base_runs = models.iter().find(|(m, _)| *m == baseline).map(|(_, r)| r.clone()).unwrap_or_default();
        let top1_by_seed = |runs: &[&Run]| -> BTreeMap<u64, f64> {
            runs.iter().filter_map(|r| r.last_eval().map(|e| (r.seed, e.top1))).collect()
        };
        let base = top1_by_seed(&base_runs);
        let mut rows = Vec::new();
        for (model, runs) in models {
            let t1: Vec<f64> = runs.iter().filter_map(|r| r.last_eval().map(|e| e.top1)).collect();
            let t5: Vec<f64> = runs.iter().filter_map(|r| r.last_eval().map(|e| e.top5)).collect();
            let ema: Vec<f64> = runs.iter().filter_map(|r| r.last_eval().map(|e| e.ema_top1)).collect();
            let mine = top1_by_seed(runs);
            let delta = if *model == baseline {
                "baseline".to_string()
            } else {
                let paired: Vec<f64> = mine.iter().filter_map(|(s, v)| base.get(s).map(|b| v - b)).collect();
                if paired.len() >= 2 {
                    let (m, s) = mean_std(&paired);
                    format!("{m:+.2} ± {s:.2} (paired, n={})", paired.len())
                } else if !paired.is_empty() {
                    format!("{:+.2} (n=1)", paired[0])
                } else {
                    "–".into()
                }
            };
            let params = runs.iter().find_map(|r| r.params).map_or("–".into(), |p| format!("{p}"));
            let ips: Vec<f64> = runs.iter().filter_map(|r| r.train_img_per_s()).collect();
            rows.push(vec![
                model.clone(),
                params,
                runs.len().to_string(),
                pm(&t1),
                pm(&t5),
                pm(&ema),
                delta,
                if ips.is_empty() { "–".into() } else { format!("{:.0}", mean_std(&ips).0) },
            ]);
        }
        out.push(Table {
            title: "Models".into(),
            note: format!(
                "Final validation accuracy (%), mean ± sample std over seeds; Δ top-1 against `{baseline}`, paired by seed (mean ± std of the per-seed differences). Throughput: median training images/s on this machine."
            ),
            header: ["model", "params", "seeds", "top-1", "top-5", "EMA top-1", "Δ top-1 vs baseline", "train img/s"].map(String::from).to_vec(),
            rows,
        });
        if let Some(t) = comparisons(models, &baseline) {
            out.push(t);
        }
    }
    if !inputs.probes.is_empty() {
        // One row per column (tap, pooling) in forward order, one column per model (trained / init).
        let mut groups: Vec<(String, String)> = Vec::new();
        let mut cols: Vec<(String, String)> = Vec::new();
        for p in &inputs.probes {
            let g = (p.model.clone(), probe_label(&p.model, &p.weights));
            if !groups.contains(&g) {
                groups.push(g);
            }
            let c = (p.tap.clone(), p.pooling.clone());
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        groups.sort_by(|a, b| a.1.cmp(&b.1));
        cols.sort_by(|a, b| {
            let combo = |t: &str| t.contains('+');
            combo(&a.0).cmp(&combo(&b.0)).then(depth_key(&a.0).total_cmp(&depth_key(&b.0))).then(a.0.cmp(&b.0))
        });
        let rows = cols
            .iter()
            .map(|(t, pool)| {
                let mut row = vec![t.clone(), pool.clone()];
                for (m, l) in &groups {
                    let v: Vec<f64> = inputs
                        .probes
                        .iter()
                        .filter(|p| {
                            p.model == *m
                                && probe_label(&p.model, &p.weights) == *l
                                && p.tap == *t
                                && p.pooling == *pool
                        })
                        .map(|p| p.top1)
                        .collect();
                    row.push(pm(&v));
                }
                row
            })
            .collect();
        let n = inputs.probes.first().map_or((0, 0), |p| (p.n_train, p.n_eval));
        let mut header = vec!["tap".to_string(), "pooling".to_string()];
        header.extend(groups.iter().map(|(_, l)| l.clone()));
        out.push(Table {
            title: "Linear probes: top-1 (%)".into(),
            note: format!(
                "Logistic-regression probes on frozen, standardised features ({} training, {} evaluation images); weight decay chosen on 10% of train held out. `a+b`: the taps concatenated (an ExMobileViT-style head on frozen features). Mean ± std over seeds where there are several. Every row, with top-5, width and weight decay, is in probes.parquet.",
                n.0, n.1
            ),
            header,
            rows,
        });
    }
    if !inputs.runs.is_empty() {
        let rows = inputs
            .runs
            .iter()
            .map(|r| {
                let p = r.provenance.as_ref();
                let s = |k: &str| {
                    p.and_then(|p| p.get(k))
                        .map_or("–".to_string(), |v| v.as_str().map_or(v.to_string(), str::to_string))
                };
                vec![
                    r.dir.display().to_string(),
                    r.model.clone(),
                    r.seed.to_string(),
                    s("git_commit"),
                    s("config_hash"),
                    format!("exvit {} / burn {}", s("exvit_version"), s("burn_version")),
                    format!("{} ({} threads)", s("cpu"), s("threads")),
                    r.wall_seconds().map_or("–".into(), |w| format!("{w:.0}")),
                ]
            })
            .collect();
        out.push(Table {
            title: "Provenance".into(),
            note: "Per run: the commit, the hash of its config.toml, the seed, versions, hardware and the wall time of its last process (seconds).".into(),
            header: ["run", "model", "seed", "git commit", "config hash", "versions", "hardware", "wall s"].map(String::from).to_vec(),
            rows,
        });
    }
    out
}

fn html(inputs: &Inputs, opts: &ReportOptions, figures: &[Figure], tables: &[Table]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;margin:1em 0;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
th{{background:#f3f3f3}}figure{{margin:1.5em 0}}figcaption{{font-size:13px;color:#555}}pre{{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}}\
</style></head><body>\n<h1>{}</h1>\n",
        esc(&opts.title),
        esc(&opts.title)
    );
    if !opts.intro.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", esc(&opts.intro));
    }
    for t in tables.iter().filter(|t| t.title == "Models") {
        table_html(&mut h, t);
    }
    if figures.is_empty() {
        h.push_str("<p>No runs or probe tables were found: nothing to plot.</p>\n");
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
    for t in tables.iter().filter(|t| t.title != "Models" && t.title != "Provenance") {
        table_html(&mut h, t);
    }
    h.push_str("<h2>Provenance</h2>\n");
    for t in tables.iter().filter(|t| t.title == "Provenance") {
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
        "<h2>{}</h2>\n<p>{}</p>\n<table><tr>{}</tr>",
        esc(&t.title),
        esc(&t.note),
        t.header.iter().map(|c| format!("<th>{}</th>", esc(c))).collect::<String>()
    );
    for r in &t.rows {
        let _ = writeln!(h, "<tr>{}</tr>", r.iter().map(|c| format!("<td>{}</td>", esc(c))).collect::<String>());
    }
    h.push_str("</table>\n");
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
    for t in tables.iter().filter(|t| t.title == "Models") {
        md_table(&mut m, t);
    }
    for f in figures {
        let _ = writeln!(m, "![{}](FIGURES/{}.svg)\n\n*{}* {}\n", f.title, f.id, f.title, f.caption);
    }
    for t in tables.iter().filter(|t| t.title != "Models" && t.title != "Provenance") {
        md_table(&mut m, t);
    }
    for t in tables.iter().filter(|t| t.title == "Provenance") {
        md_table(&mut m, t);
    }
    let _ = writeln!(
        m,
        "Files read: {}.",
        inputs.files.iter().map(|f| format!("`{}`", f.display())).collect::<Vec<_>>().join(", ")
    );
    m
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ReportError::Io { path: path.to_path_buf(), source: e }
    })
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
        write_atomic(&fig_dir.join(format!("{}.svg", f.id)), f.svg.as_bytes())?;
    }
    let md_path = html_path.with_extension("md");
    write_atomic(&md_path, report.markdown.replace("](FIGURES/", &format!("]({fig_dir_name}/")).as_bytes())?;
    write_atomic(html_path, report.html.as_bytes())?;
    Ok(md_path)
}
