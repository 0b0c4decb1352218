//! The report's tables: models, paired comparisons, linear probes, provenance.

use std::collections::BTreeMap;

use exvit_rundir::Predictions;

use crate::collect::{Inputs, Run};
use crate::figures::{depth_key, probe_label};
use crate::page::{ReportOptions, Section};
use crate::stats::{mean_std, pm};

/// A table: header and rows of cells, in a section of the page.
#[derive(Debug, Clone)]
pub struct Table {
    /// Where it goes.
    pub section: Section,
    /// Title.
    pub title: String,
    /// What it holds and how to read it.
    pub note: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
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
        section: Section::Analyses,
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

pub(crate) fn tables(inputs: &Inputs, models: &[(String, Vec<&Run>)], opts: &ReportOptions) -> Vec<Table> {
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
            section: Section::Models,
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
            section: Section::Analyses,
            title: "Linear probes: top-1 (%)".into(),
            note: format!(
                "Logistic-regression probes on frozen, standardised features ({} training, {} evaluation images); weight decay chosen on 10% of train held out. `a+b`: the taps concatenated (an ExMobileViT-style head on frozen features). Mean ± std over seeds where there are several. Every row, with top-5, width and weight decay, is in probes.parquet.",
                n.0, n.1
            ),
            header,
            rows,
        });
    }
    out.extend(crate::attention::attention_table(inputs));
    if !inputs.runs.is_empty() {
        let rows = inputs
            .runs
            .iter()
            .map(|r| {
                let p = r.provenance.clone().unwrap_or_default();
                let s = |v: Option<String>| v.unwrap_or_else(|| "–".into());
                let commit = match (p.git_commit, p.git_dirty) {
                    (Some(c), Some(true)) => format!("{c} (uncommitted changes)"),
                    (c, _) => s(c),
                };
                vec![
                    r.dir.display().to_string(),
                    r.model.clone(),
                    r.seed.to_string(),
                    commit,
                    s(p.config_hash),
                    format!("exvit {} / burn {}", s(p.exvit_version), s(p.burn_version)),
                    format!("{} ({} threads)", s(p.cpu), s(p.threads.map(|t| t.to_string()))),
                    r.wall_seconds().map_or("–".into(), |w| format!("{w:.0}")),
                ]
            })
            .collect();
        out.push(Table {
            section: Section::Provenance,
            title: "Provenance".into(),
            note: "Per run: the commit, the hash of its config.toml, the seed, versions, hardware and the wall time of its last process (seconds).".into(),
            header: ["run", "model", "seed", "git commit", "config hash", "versions", "hardware", "wall s"].map(String::from).to_vec(),
            rows,
        });
    }
    out
}
