//! The run writer: everything a training run puts in its directory, in the order that makes a
//! crash at any moment recoverable. Files go through [`exvit_rundir`] (formats) and are written
//! atomically; only the writing replica (rank 0) holds an active writer.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use exvit_common::fnv1a64;
use exvit_rundir::{MetricRow, Predictions, Provenance, RunDir};
use exvit_zoo::{save_safetensors, MobileVit};

use crate::checkpoint::{save_checkpoint, Position};
use crate::config::RunConfig;
use crate::run::RunError;
use crate::trainer::Trainer;

/// Writes one run's directory. A writer made with `active = false` (a replica other than rank
/// 0) writes nothing.
#[derive(Debug)]
pub struct RunWriter {
    dir: RunDir,
    keep_last: usize,
    /// The resolved config as written to `config.toml`.
    config_text: String,
    seed: u64,
    /// Metadata stored in every checkpoint.
    meta: BTreeMap<String, String>,
    active: bool,
}

impl RunWriter {
    /// A writer for `cfg`'s run directory.
    pub fn new(cfg: &RunConfig, active: bool) -> Self {
        let config_text = cfg.to_toml();
        let meta =
            BTreeMap::from([("config".to_string(), config_text.clone()), ("seed".to_string(), cfg.seed.to_string())]);
        RunWriter {
            dir: RunDir::new(&cfg.out),
            keep_last: cfg.keep_last.max(1),
            config_text,
            seed: cfg.seed,
            meta,
            active,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Writes `config.toml`.
    pub fn write_config(&self) -> Result<(), RunError> {
        if self.active {
            exvit_common::write_bytes_atomic(&self.dir.config(), self.config_text.as_bytes())?;
        }
        Ok(())
    }

    /// Saves the state at `pos`: metrics first, then the checkpoint, then the latest weights.
    /// The checkpoint is the commit point: after a crash the metrics always cover it (rows past
    /// it are dropped on resume). Older checkpoints beyond `keep_last` are removed.
    pub fn save<B: AutodiffBackend>(
        &self,
        t: &Trainer<B, MobileVit<B>>,
        pos: Position,
        rows: &[MetricRow],
    ) -> Result<(), RunError> {
        if !self.active {
            return Ok(());
        }
        exvit_rundir::write_metrics(rows, &self.dir.metrics())?;
        save_checkpoint(&self.dir.checkpoint(pos.iteration), t, pos, &self.meta)?;
        for (_, old) in self.dir.checkpoints().iter().rev().skip(self.keep_last) {
            let _ = std::fs::remove_file(old);
        }
        save_safetensors(&t.model.valid(), &self.dir.model(), Default::default())?;
        if let Some(ema) = &t.ema {
            save_safetensors(&ema.model, &self.dir.ema(), Default::default())?;
        }
        Ok(())
    }

    /// Saves the state at `pos` as the best checkpoint.
    pub fn save_best<B: AutodiffBackend>(&self, t: &Trainer<B, MobileVit<B>>, pos: Position) -> Result<(), RunError> {
        if self.active {
            save_checkpoint(&self.dir.best(), t, pos, &self.meta)?;
        }
        Ok(())
    }

    /// Writes `predictions.parquet`.
    pub fn write_predictions(&self, p: &Predictions) -> Result<(), RunError> {
        if self.active {
            exvit_rundir::write_predictions(p, &self.dir.predictions())?;
        }
        Ok(())
    }

    /// Writes `provenance.json` for this process: `seconds` of wall time, ending at `pos`.
    pub fn write_provenance(&self, seconds: f64, pos: Position, replicas: usize) -> Result<(), RunError> {
        if !self.active {
            return Ok(());
        }
        // The commit the binary was built from (build.rs), and whether its tree had changes.
        let dirty = match env!("EXVIT_GIT_DIRTY") {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        let p = Provenance {
            git_commit: Some(env!("EXVIT_GIT_COMMIT")).filter(|c| !c.is_empty()).map(String::from),
            git_dirty: dirty,
            config_hash: Some(format!("{:016x}", fnv1a64(&self.config_text))),
            seed: Some(self.seed),
            exvit_version: Some(env!("CARGO_PKG_VERSION").into()),
            burn_version: Some("0.21.0".into()),
            cpu: Provenance::this_cpu(),
            threads: Some(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
            replicas: Some(replicas),
            wall_seconds_this_process: Some((seconds * 1000.0).round() / 1000.0),
            epoch: Some(pos.epoch),
            iteration: Some(pos.iteration),
        };
        Ok(exvit_rundir::write_provenance(&p, &self.dir.provenance())?)
    }
}
