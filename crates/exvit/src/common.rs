//! What several commands share: the device flag, opening a split, the pretrained config's
//! eval preprocessing, and loading weights whatever their class count.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use exvit_data::resize::Filter;
use exvit_data::transform::{EvalTransform, Normalize};
use exvit_data::Dataset;
use exvit_zoo::{ChannelOrder, PretrainedCfg};

/// Refuses any device but the CPU (the CUDA backend is a planned cargo feature).
pub fn check_device(device: &str) -> Result<()> {
    if device != "cpu" {
        bail!("--device {device}: this build has only the CPU backend (the CUDA backend is a planned cargo feature)");
    }
    Ok(())
}

/// Opens `data/split` when that folder exists, else `data` itself (a split folder, or a CIFAR
/// binary folder whose split `split` is read).
pub fn open_split(data: &Path, split: &str) -> Result<(PathBuf, Arc<Dataset>)> {
    let dir = if data.join(split).is_dir() { data.join(split) } else { data.to_path_buf() };
    let ds = exvit_data::open_path(&dir, split).with_context(|| format!("reading {}", dir.display()))?;
    Ok((dir, Arc::new(ds)))
}

/// The eval transform and normalisation of a pretrained config, with optional overrides.
pub fn eval_preprocessing(
    pre: &PretrainedCfg,
    resolution: Option<usize>,
    crop_pct: Option<f64>,
    interpolation: Option<Filter>,
) -> Result<(EvalTransform, Normalize)> {
    let size = resolution.unwrap_or(pre.input_size[1]);
    let filter = match interpolation {
        Some(f) => f,
        None => {
            pre.interpolation.parse().map_err(anyhow::Error::msg).context("the model's pretrained interpolation")?
        }
    };
    let tf = EvalTransform::from_crop_pct(size, crop_pct.unwrap_or(pre.crop_pct), filter);
    let norm = Normalize {
        mean: pre.mean.map(|v| v as f32),
        std: pre.std.map(|v| v as f32),
        bgr: pre.channel_order == ChannelOrder::Bgr,
    };
    Ok((tf, norm))
}

/// Classes of a weights file's classifier (`head.fc.weight` is `[classes, features]`).
pub fn classes_in_weights(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not safetensors", path.display()))?;
    let t = st.tensor("head.fc.weight").with_context(|| format!("{}: no tensor `head.fc.weight`", path.display()))?;
    Ok(t.shape()[0])
}
