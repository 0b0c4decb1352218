//! What several commands share: opening a split and the preprocessing flags (the device flag is
//! in `device.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use exvit_data::preprocess::{DataConfig, EvalOverrides};
use exvit_data::resize::Filter;
use exvit_data::Dataset;
use exvit_zoo::PretrainedCfg;

/// A flag set by the first Ctrl-C (`what` tells the user what happens next); a second one exits
/// with status 130.
pub fn stop_on_ctrl_c(what: &'static str) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // a second Ctrl-C: leave now
        }
        eprintln!("\nCtrl-C: {what} (again to abort)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// `--pretrained`: `model`'s weights from its Hugging Face hub repository, in the cache timm
/// uses, downloaded into it when missing (unless `HF_HUB_OFFLINE`); checked against their
/// SHA-256 (exvit_zoo::hub).
pub fn pretrained_weights(model: &str) -> Result<PathBuf> {
    let cfg = exvit_zoo::resolve_model(model, 1000).with_context(|| format!("model `{model}`"))?;
    Ok(exvit_zoo::hub::pretrained_weights(&cfg, &exvit_zoo::hub::HubOptions::from_env())?)
}

/// `--weights W`, or with `pretrained` the model's hub weights ([`pretrained_weights`]).
pub fn weights_or_pretrained(model: &str, weights: Option<PathBuf>, pretrained: bool) -> Result<Option<PathBuf>> {
    if pretrained {
        pretrained_weights(model).map(Some)
    } else {
        Ok(weights)
    }
}

/// Opens `data/split` when that folder exists, else `data` itself (a split folder, or a CIFAR
/// binary folder whose split `split` is read).
pub fn open_split(data: &Path, split: &str) -> Result<(PathBuf, Arc<Dataset>)> {
    let dir = if data.join(split).is_dir() { data.join(split) } else { data.to_path_buf() };
    let ds = exvit_data::open_path(&dir, split).with_context(|| format!("reading {}", dir.display()))?;
    Ok((dir, Arc::new(ds)))
}

/// Overrides of a model's pretrained eval preprocessing, shared by `exvit eval` and
/// `exvit probe extract`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Preprocessing {
    /// Input side (default: the model's pretrained config).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Crop fraction (default: the model's pretrained config).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// Interpolation (default: the model's pretrained config).
    #[arg(long)]
    pub interpolation: Option<Filter>,
}

impl Preprocessing {
    /// The model's eval preprocessing ([`DataConfig::from_pretrained`]) with these overrides.
    pub fn resolve(&self, pre: &PretrainedCfg) -> Result<DataConfig> {
        let overrides =
            EvalOverrides { resolution: self.resolution, crop_pct: self.crop_pct, interpolation: self.interpolation };
        Ok(DataConfig::from_pretrained(pre).context("the model's pretrained config")?.with(&overrides))
    }
}
