//! Finds what a report is made of under the folders it is given.

use std::path::{Path, PathBuf};

use exvit_probe::{read_cka, read_probes, CkaRow, ProbeRow};
use exvit_train::run::{read_metrics, read_predictions, MetricRow, Predictions, RunConfig};

use crate::ReportError;

/// One training run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its directory.
    pub dir: PathBuf,
    /// The model (registry name or TOML path).
    pub model: String,
    /// The seed.
    pub seed: u64,
    /// `config.toml`, as written.
    pub config_text: String,
    /// `metrics.parquet`.
    pub metrics: Vec<MetricRow>,
    /// `provenance.json`, where there is one.
    pub provenance: Option<serde_json::Value>,
    /// Learned parameters (from `model.safetensors`: every tensor but BatchNorm's running
    /// statistics, as timm's `parameters()`), where the weights are there.
    pub params: Option<u64>,
    /// `predictions.parquet` (per-image label ranks of the last evaluation), where there is one.
    pub predictions: Option<Predictions>,
}

impl Run {
    /// The last evaluation row.
    pub fn last_eval(&self) -> Option<&MetricRow> {
        self.metrics.iter().rev().find(|r| r.kind == "eval")
    }

    /// Median training throughput (images/s) over the run's steps.
    pub fn train_img_per_s(&self) -> Option<f64> {
        let mut v: Vec<f64> =
            self.metrics.iter().filter(|r| r.kind == "train" && r.img_per_s > 0.0).map(|r| r.img_per_s).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Wall seconds recorded in the provenance.
    pub fn wall_seconds(&self) -> Option<f64> {
        self.provenance.as_ref()?.get("wall_seconds_this_process")?.as_f64()
    }
}

/// Everything found.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Training runs, in the order found.
    pub runs: Vec<Run>,
    /// Probe rows of every `probes.parquet`.
    pub probes: Vec<ProbeRow>,
    /// CKA rows of every `cka.parquet`.
    pub cka: Vec<CkaRow>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// Scans each folder (to a depth of 3) for run directories (`config.toml` + `metrics.parquet`),
/// `probes.parquet` and `cka.parquet`.
pub fn collect(dirs: &[PathBuf]) -> Result<Inputs, ReportError> {
    let mut found = Inputs::default();
    let mut seen = std::collections::BTreeSet::new();
    for d in dirs {
        if !d.is_dir() {
            return Err(ReportError::Input { path: d.clone(), message: "not a folder".into() });
        }
        scan(d, 0, &mut found, &mut seen)?;
    }
    Ok(found)
}

fn scan(
    dir: &Path,
    depth: usize,
    out: &mut Inputs,
    seen: &mut std::collections::BTreeSet<PathBuf>,
) -> Result<(), ReportError> {
    let canon = dir.canonicalize().map_err(io(dir))?;
    if !seen.insert(canon) {
        return Ok(());
    }
    let metrics = dir.join("metrics.parquet");
    let config = dir.join("config.toml");
    if metrics.is_file() && config.is_file() {
        out.runs.push(read_run(dir)?);
        out.files.extend([config, metrics]);
    }
    for (name, is_probe) in [("probes.parquet", true), ("cka.parquet", false)] {
        let p = dir.join(name);
        if p.is_file() {
            let err = |e: exvit_probe::ProbeError| ReportError::Input { path: p.clone(), message: e.to_string() };
            if is_probe {
                out.probes.extend(read_probes(&p).map_err(err)?);
            } else {
                out.cka.extend(read_cka(&p).map_err(err)?);
            }
            out.files.push(p);
        }
    }
    if depth < 3 {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for s in subdirs {
            scan(&s, depth + 1, out, seen)?;
        }
    }
    Ok(())
}

fn read_run(dir: &Path) -> Result<Run, ReportError> {
    let cpath = dir.join("config.toml");
    let config_text = std::fs::read_to_string(&cpath).map_err(io(&cpath))?;
    let cfg = RunConfig::from_toml_file(&cpath)
        .map_err(|e| ReportError::Input { path: cpath.clone(), message: e.to_string() })?;
    let mpath = dir.join("metrics.parquet");
    let metrics =
        read_metrics(&mpath).map_err(|e| ReportError::Input { path: mpath.clone(), message: e.to_string() })?;
    let ppath = dir.join("provenance.json");
    let provenance = if ppath.is_file() {
        let text = std::fs::read_to_string(&ppath).map_err(io(&ppath))?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| ReportError::Input { path: ppath.clone(), message: e.to_string() })?,
        )
    } else {
        None
    };
    let wpath = dir.join("model.safetensors");
    let params = if wpath.is_file() { Some(count_params(&wpath)?) } else { None };
    let rpath = dir.join("predictions.parquet");
    let predictions = if rpath.is_file() {
        Some(read_predictions(&rpath).map_err(|e| ReportError::Input { path: rpath.clone(), message: e.to_string() })?)
    } else {
        None
    };
    Ok(Run {
        dir: dir.to_path_buf(),
        model: cfg.model,
        seed: cfg.seed,
        config_text,
        metrics,
        provenance,
        params,
        predictions,
    })
}

/// Learned parameters in a safetensors file (BatchNorm running statistics left out).
pub fn count_params(path: &Path) -> Result<u64, ReportError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ReportError::Input { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(st
        .tensors()
        .iter()
        .filter(|(k, _)| {
            !(k.ends_with("running_mean") || k.ends_with("running_var") || k.ends_with("num_batches_tracked"))
        })
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum())
}
