//! The run config: everything `exvit train --config FILE.toml` reads, and its validation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use exvit_data::resize::Filter;
use exvit_data::sampler::MultiScale;
use exvit_data::Dataset;
use exvit_zoo::resolve_model;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::trainer::TrainConfig;

/// Everything a run needs, as `exvit train --config FILE.toml` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A zoo name or a model TOML.
    pub model: String,
    /// The training split (ImageFolder, tar shards, or a CIFAR binary folder).
    pub train_data: PathBuf,
    /// The split to evaluate on after each epoch (optional).
    #[serde(default)]
    pub val_data: Option<PathBuf>,
    /// Split name inside a CIFAR binary folder (train/test).
    #[serde(default)]
    pub cifar_val_split: Option<String>,
    /// The run directory.
    pub out: PathBuf,
    /// Epochs.
    pub epochs: u64,
    /// Seed of the sampler and the augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Training resolution (RandomResizedCrop size) when not multi-scale.
    pub size: usize,
    /// Batch size (per replica).
    pub batch: usize,
    /// ml-cvnets' multi-scale sampler instead of one resolution.
    #[serde(default)]
    pub multi_scale: Option<MultiScale>,
    /// Micro-batches per optimiser step.
    #[serde(default = "one")]
    pub accum: usize,
    /// Loader threads (default: all cores).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Interpolation of the crops and the eval resize.
    #[serde(default = "bilinear")]
    pub interpolation: Filter,
    /// RandomResizedCrop's area range (torchvision's default 0.08–1; a larger floor keeps
    /// layout, as the demo's layout classes need).
    #[serde(default = "rrc_scale")]
    pub rrc_scale: (f64, f64),
    /// Eval: the shorter side is resized to `eval_size / eval_crop_pct`, then center-cropped.
    #[serde(default = "crop_pct")]
    pub eval_crop_pct: f64,
    /// Eval resolution (default: `size`).
    #[serde(default)]
    pub eval_size: Option<usize>,
    /// The recipe (default: ml-cvnets' for `epochs`).
    pub recipe: TrainConfig,
    /// Checkpoint every N iterations (and at each epoch's end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept.
    #[serde(default = "two")]
    pub keep_last: usize,
    /// Initialise the trunk from these weights (`--init-from`).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Stop after this many iterations in all (for tests and smoke runs).
    #[serde(default)]
    pub max_iterations: Option<u64>,
    /// Check the model every N iterations (and at each epoch's end): every tensor finite, and
    /// the data-parallel replicas' parameters identical (`crate::guard`). 0: at epoch ends only.
    #[serde(default = "ten")]
    pub guard_every: u64,
    /// Load `init_from` and the checkpoint at a resume even when they hold NaN or Inf
    /// (`--allow-nonfinite`; refused by default, naming the tensors). Not saved with the run.
    #[serde(default, skip_serializing)]
    pub allow_nonfinite: bool,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn ten() -> u64 {
    10
}
fn bilinear() -> Filter {
    Filter::Bilinear
}
fn rrc_scale() -> (f64, f64) {
    (0.08, 1.0)
}
fn crop_pct() -> f64 {
    0.875
}

/// Why a run config is refused. Each variant names the file or the field.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not a valid run config (unknown key, wrong type; the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML decoder's message.
        message: String,
    },
    /// A value out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The model does not resolve.
    #[error("model `{model}`: {source}")]
    Model {
        /// The name or TOML path.
        model: String,
        /// Why.
        source: exvit_zoo::ZooError,
    },
    /// A dataset path does not exist.
    #[error("{field} {}: does not exist", path.display())]
    MissingData {
        /// `train_data` or `val_data`.
        field: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A dataset cannot be opened.
    #[error("{field}: {source}")]
    Data {
        /// `train_data` or `val_data`.
        field: &'static str,
        /// Why.
        source: exvit_data::DataError,
    },
    /// The run directory cannot be created or written.
    #[error("out {}: {source}", path.display())]
    Out {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl RunConfig {
    /// Reads a config, refusing unknown keys and wrong types with the file's name.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// The config as the run directory's `config.toml` holds it (every default written out).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config serialises to TOML")
    }

    /// The model's config for `classes` classes.
    pub fn model_config(&self, classes: usize) -> Result<exvit_zoo::MobileVitConfig, ConfigError> {
        resolve_model(&self.model, classes).map_err(|source| ConfigError::Model { model: self.model.clone(), source })
    }

    /// Checks everything that can be checked before any work: the model resolves, the data
    /// opens and is not empty, numbers are in range, the run directory can be written.
    /// Returns the opened train and validation sets.
    pub fn validate(&self) -> Result<(Arc<Dataset>, Option<Arc<Dataset>>), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        for (field, v) in
            [("epochs", self.epochs as usize), ("batch", self.batch), ("size", self.size), ("accum", self.accum)]
        {
            if v == 0 {
                return invalid(field, "must be positive".into());
            }
        }
        let (lo, hi) = self.rrc_scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return invalid("rrc_scale", format!("must satisfy 0 < low <= high <= 1, not ({lo}, {hi})"));
        }
        if !(0.0 < self.eval_crop_pct && self.eval_crop_pct <= 1.0) {
            return invalid("eval_crop_pct", format!("{} is not in (0, 1]", self.eval_crop_pct));
        }
        let train = Arc::new(open_data("train_data", &self.train_data, "train")?);
        if train.samples.is_empty() {
            return invalid("train_data", format!("{}: no samples", self.train_data.display()));
        }
        let val = match &self.val_data {
            Some(p) => Some(Arc::new(open_data("val_data", p, self.cifar_val_split.as_deref().unwrap_or("test"))?)),
            None => None,
        };
        if let Some(v) = &val {
            if v.classes.len() != train.classes.len() {
                return invalid(
                    "val_data",
                    format!("has {} classes, train_data {}", v.classes.len(), train.classes.len()),
                );
            }
        }
        self.model_config(train.classes.len())?;
        let out = |source| ConfigError::Out { path: self.out.clone(), source };
        std::fs::create_dir_all(&self.out).map_err(out)?;
        let probe = self.out.join(".write-test");
        std::fs::write(&probe, b"").map_err(out)?;
        let _ = std::fs::remove_file(probe);
        Ok((train, val))
    }

    /// The evaluation transform and resolution.
    pub fn eval_transform(&self) -> (exvit_data::transform::Transform, usize) {
        let size = self.eval_size.unwrap_or(self.size);
        let tf = exvit_data::transform::EvalTransform::from_crop_pct(size, self.eval_crop_pct, self.interpolation);
        (exvit_data::transform::Transform::Eval(tf), size)
    }
}

fn open_data(field: &'static str, path: &Path, cifar_split: &str) -> Result<Dataset, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::MissingData { field, path: path.to_path_buf() });
    }
    exvit_data::open_path(path, cifar_split).map_err(|source| ConfigError::Data { field, source })
}
