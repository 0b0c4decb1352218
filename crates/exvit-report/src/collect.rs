//! Finds what a report is made of under the folders it is given.

use std::path::{Path, PathBuf};

use exvit_rundir::{
    count_params_in_file, read_attention, read_attention_maps, read_cka, read_metrics, read_predictions, read_probes,
    read_provenance, AttentionMaps, AttentionRow, CkaRow, MetricKind, MetricRow, Predictions, ProbeRow, Provenance,
    RunDir, RunDirError, RunHeader,
};

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
    pub provenance: Option<Provenance>,
    /// Learned parameters (from `model.safetensors`: every tensor but BatchNorm's running
    /// statistics, as timm's `parameters()`), where the weights are there.
    pub params: Option<u64>,
    /// `predictions.parquet` (per-image label ranks of the last evaluation), where there is one.
    pub predictions: Option<Predictions>,
}

impl Run {
    /// The last evaluation row.
    pub fn last_eval(&self) -> Option<&MetricRow> {
        self.metrics.iter().rev().find(|r| r.kind == MetricKind::Eval)
    }

    /// Median training throughput (images/s) over the run's steps.
    pub fn train_img_per_s(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .metrics
            .iter()
            .filter(|r| r.kind == MetricKind::Train && r.img_per_s > 0.0)
            .map(|r| r.img_per_s)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Wall seconds recorded in the provenance.
    pub fn wall_seconds(&self) -> Option<f64> {
        self.provenance.as_ref()?.wall_seconds_this_process
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
    /// Attention statistics of every `attention.parquet`.
    pub attention: Vec<AttentionRow>,
    /// The attention maps of every folder holding `attention_maps.parquet` (image indices
    /// renumbered to be unique across folders).
    pub maps: AttentionMaps,
    /// The files read.
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// Scans each folder (to a depth of 3) for run directories (`config.toml` + `metrics.parquet`),
/// `probes.parquet`, `cka.parquet`, `attention.parquet` and attention maps
/// (`attention_maps.parquet` with `attention_images.parquet`).
pub fn collect(dirs: &[PathBuf]) -> Result<Inputs, ReportError> {
    let mut found = Inputs::default();
    let mut seen = std::collections::BTreeSet::new();
    for d in dirs {
        if !d.is_dir() {
            return Err(ReportError::NotAFolder { path: d.clone() });
        }
        scan(d, 0, &mut found, &mut seen)?;
    }
    Ok(found)
}

fn input(e: RunDirError) -> ReportError {
    ReportError::Input(e)
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
    if RunDir::is_run(dir) {
        let run = read_run(&RunDir::new(dir))?;
        out.files.extend([dir.join(RunDir::CONFIG), dir.join(RunDir::METRICS)]);
        out.runs.push(run);
    }
    let probes = dir.join("probes.parquet");
    if probes.is_file() {
        out.probes.extend(read_probes(&probes).map_err(input)?);
        out.files.push(probes);
    }
    let cka = dir.join("cka.parquet");
    if cka.is_file() {
        out.cka.extend(read_cka(&cka).map_err(input)?);
        out.files.push(cka);
    }
    let attention = dir.join("attention.parquet");
    if attention.is_file() {
        out.attention.extend(read_attention(&attention).map_err(input)?);
        out.files.push(attention);
    }
    if AttentionMaps::maps_path(dir).is_file() {
        let m = read_attention_maps(dir).map_err(input)?;
        let offset = out.maps.images.iter().map(|i| i.image + 1).max().unwrap_or(0);
        out.maps.images.extend(m.images.into_iter().map(|mut i| {
            i.image += offset;
            i
        }));
        out.maps.maps.extend(m.maps.into_iter().map(|mut x| {
            x.image += offset;
            x
        }));
        out.files.extend([AttentionMaps::maps_path(dir), AttentionMaps::images_path(dir)]);
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

fn read_run(dir: &RunDir) -> Result<Run, ReportError> {
    let header = RunHeader::read(&dir.config()).map_err(input)?;
    let metrics = read_metrics(&dir.metrics()).map_err(input)?;
    let provenance =
        dir.provenance().is_file().then(|| read_provenance(&dir.provenance())).transpose().map_err(input)?;
    let params = dir.model().is_file().then(|| count_params_in_file(&dir.model())).transpose().map_err(input)?;
    let predictions =
        dir.predictions().is_file().then(|| read_predictions(&dir.predictions())).transpose().map_err(input)?;
    Ok(Run {
        dir: dir.path().to_path_buf(),
        model: header.model,
        seed: header.seed,
        config_text: header.text,
        metrics,
        provenance,
        params,
        predictions,
    })
}
