//! The report's figures: probe accuracy against depth, CKA heatmaps, training curves.

use std::collections::BTreeMap;

use exvit_rundir::{CkaRow, MetricKind, MetricRow, ProbeRow, WeightsRef};

use crate::collect::{Inputs, Run};
use crate::plot::{heatmap, line_chart, LineStyle, Marker, Series};
use crate::stats::mean_std;
use crate::ReportError;

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

/// Position of a tap in the forward pass, for ordering a depth axis.
pub fn depth_key(tap: &str) -> f64 {
    let parts: Vec<&str> = tap.split('.').collect();
    match parts.as_slice() {
        ["stem"] => 0.0,
        ["stages", s] => s.parse::<f64>().map_or(50.0, |s| s + 1.0),
        // Inside a MobileViT block: its transformer layers, then the post-norm tokens
        // (`transformer` is that tap's old name), before the stage's output.
        ["stages", s, _, "transformer", k] => {
            s.parse::<f64>().map_or(50.0, |s| s + 0.5 + 0.04 * k.parse::<f64>().unwrap_or(0.0).min(10.0))
        }
        ["stages", s, _, "norm" | "transformer"] => s.parse::<f64>().map_or(50.0, |s| s + 0.95),
        ["final_conv"] => 100.0,
        ["exshortcuts", n] => 101.0 + n.parse::<f64>().unwrap_or(0.0),
        ["pooled"] => 200.0,
        _ => 150.0,
    }
}

/// Mean over runs of `f(run's rows of one epoch)` by epoch.
fn per_epoch(runs: &[&Run], kind: MetricKind, f: impl Fn(&[&MetricRow]) -> f64) -> Vec<(f64, f64)> {
    let mut acc: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for r in runs {
        let mut epochs: BTreeMap<u64, Vec<&MetricRow>> = BTreeMap::new();
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
    acc.into_iter()
        .map(|(e, v)| (e as f64 + if kind == MetricKind::Eval { 1.0 } else { 0.5 }, mean_std(&v).0))
        .collect()
}

/// `model (trained)` or `model (random init)`: how the report names a feature set.
pub(crate) fn probe_label(model: &str, weights: &WeightsRef) -> String {
    if weights.is_init() {
        format!("{model} (random init)")
    } else {
        format!("{model} (trained)")
    }
}

pub(crate) fn column_name(tap: &str, pooling: &str) -> String {
    if pooling == "gap" || pooling == "none" {
        tap.to_string()
    } else {
        format!("{tap}:{pooling}")
    }
}

/// The figures for `inputs`; `models` are the runs grouped by model (baseline first), and
/// `color_of` gives each model its palette index.
pub(crate) fn figures(
    inputs: &Inputs,
    models: &[(String, Vec<&Run>)],
    color_of: &dyn Fn(&str) -> usize,
) -> Result<Vec<Figure>, ReportError> {
    let mut figures = Vec::new();

    // Probe accuracy against depth.
    let singles: Vec<&ProbeRow> = inputs.probes.iter().filter(|p| !p.tap.contains('+')).collect();
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
            let init = label.ends_with("(random init)");
            series.push(Series {
                name: label.clone(),
                color: color_of(model),
                line: if init { LineStyle::Dashed } else { LineStyle::Solid },
                marker: if init { Marker::Hollow } else { Marker::Filled },
                points: pts,
            });
        }
        for (model, runs) in models {
            let head: Vec<f64> = runs.iter().filter_map(|r| r.last_eval().map(|e| e.top1)).collect();
            if !head.is_empty() && groups.iter().any(|(m, _)| m == model) {
                let y = mean_std(&head).0;
                series.push(Series {
                    name: format!("{model}: its own head (val top-1)"),
                    color: color_of(model),
                    line: LineStyle::Dotted,
                    marker: Marker::None,
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
            (900, 560),
        )?;
        figures.push(Figure {
            id: "probe-depth".into(),
            title: "Probe accuracy against depth".into(),
            caption: "Top-1 (%) of a logistic-regression probe on each tap's pooled features (mean over seeds), trained models solid with filled markers, random init dashed with hollow markers; the dotted horizontal lines are each trained model's own classifier on the validation split.".into(),
            svg,
        });
    }

    // CKA heatmaps: one per pair of feature sets (at most 4).
    let mut pairs: Vec<(String, WeightsRef, String, WeightsRef)> = Vec::new();
    for c in &inputs.cka {
        let k = (c.model_a.clone(), c.weights_a.clone(), c.model_b.clone(), c.weights_b.clone());
        if !pairs.contains(&k) {
            pairs.push(k);
        }
    }
    for (i, (ma, wa, mb, wb)) in pairs.iter().take(4).enumerate() {
        let rows: Vec<&CkaRow> = inputs
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
        let (solid, dashed) = ((LineStyle::Solid, Marker::Filled), (LineStyle::Dashed, Marker::None));
        let series = |name: String, color, (line, marker), points| Series { name, color, line, marker, points };
        for (model, runs) in models {
            let c = color_of(model);
            let (train, eval) = (MetricKind::Train, MetricKind::Eval);
            let train = per_epoch(runs, train, |rows| rows.iter().map(|r| r.loss).sum::<f64>() / rows.len() as f64);
            let val = per_epoch(runs, eval, |rows| rows.last().map_or(f64::NAN, |r| r.loss));
            loss.push(series(format!("{model} train"), c, solid, train));
            loss.push(series(format!("{model} val"), c, dashed, val));
            let m = per_epoch(runs, eval, |rows| rows.last().map_or(f64::NAN, |r| r.top1));
            let e = per_epoch(runs, eval, |rows| rows.last().map_or(f64::NAN, |r| r.ema_top1));
            top1.push(series(model.to_string(), c, solid, m));
            top1.push(series(format!("{model} EMA"), c, dashed, e));
        }
        let svg = line_chart("curves-loss", "Loss by epoch", "epoch", "cross entropy", None, &loss, None, (900, 420))?;
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
            (900, 420),
        )?;
        figures.push(Figure {
            id: "curves-top1".into(),
            title: "Validation top-1 by epoch".into(),
            caption: "Validation top-1 of the model (solid) and of its EMA (dashed), mean over seeds (the paper's Figure 4 layout: MobileViT vs ExMobileViT vs the wide-head control).".into(),
            svg,
        });
    }

    figures.extend(crate::attention::attention_figures(inputs, color_of)?);
    Ok(figures)
}
