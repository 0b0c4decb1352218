//! The names of a run directory's files.

use std::path::{Path, PathBuf};

/// A run directory: where each of its files lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run config, `config.toml`.
    pub const CONFIG: &'static str = "config.toml";
    /// Per-step and per-evaluation metrics.
    pub const METRICS: &'static str = "metrics.parquet";
    /// Per-image results of the latest evaluation.
    pub const PREDICTIONS: &'static str = "predictions.parquet";
    /// Provenance.
    pub const PROVENANCE: &'static str = "provenance.json";
    /// The latest model weights (timm keys).
    pub const MODEL: &'static str = "model.safetensors";
    /// The latest EMA weights.
    pub const EMA: &'static str = "ema.safetensors";
    /// The best checkpoint.
    pub const BEST: &'static str = "best.safetensors";

    /// The run directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir(path.into())
    }

    /// Its folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.0.join(Self::CONFIG)
    }
    /// `metrics.parquet`.
    pub fn metrics(&self) -> PathBuf {
        self.0.join(Self::METRICS)
    }
    /// `predictions.parquet`.
    pub fn predictions(&self) -> PathBuf {
        self.0.join(Self::PREDICTIONS)
    }
    /// `provenance.json`.
    pub fn provenance(&self) -> PathBuf {
        self.0.join(Self::PROVENANCE)
    }
    /// `model.safetensors`.
    pub fn model(&self) -> PathBuf {
        self.0.join(Self::MODEL)
    }
    /// `ema.safetensors`.
    pub fn ema(&self) -> PathBuf {
        self.0.join(Self::EMA)
    }
    /// `best.safetensors`.
    pub fn best(&self) -> PathBuf {
        self.0.join(Self::BEST)
    }

    /// The checkpoint written at `iteration`: `ckpt-NNNNNNNN.safetensors`.
    pub fn checkpoint(&self, iteration: u64) -> PathBuf {
        self.0.join(format!("ckpt-{iteration:08}.safetensors"))
    }

    /// The checkpoints present, oldest first, with their iterations.
    pub fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let it = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()?;
                Some((it, e.path()))
            })
            .collect();
        v.sort();
        v
    }

    /// Whether `path` holds a run (a config and metrics).
    pub fn is_run(path: &Path) -> bool {
        path.join(Self::CONFIG).is_file() && path.join(Self::METRICS).is_file()
    }
}
