//! A model by name, with its weights: what every command that computes starts with.

use std::io::Read;
use std::path::Path;

use burn::prelude::*;

use crate::mobilevit::MobileVit;
use crate::registry::{resolve_model, ZooError};
use crate::weights::{load_safetensors, LoadMode, WeightsError};

/// Where a model's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelWeights<'a> {
    /// The builder's random initialisation, from the backend's generator seeded with `seed`.
    Init {
        /// The seed.
        seed: u64,
    },
    /// A timm-keyed safetensors file, loaded strictly (every key, every shape). The class count
    /// is the file's (its classifier's rows).
    File(&'a Path),
    /// The trunk of a timm-keyed file (`head.*` left at its initialisation from `seed`): a
    /// backbone for fine-tuning on other classes.
    Backbone {
        /// The file.
        path: &'a Path,
        /// Seed of the head's initialisation.
        seed: u64,
    },
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The name or TOML variant.
    #[error(transparent)]
    Zoo(#[from] ZooError),
    /// The weights.
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// Classes of a weights file: the rows of `{classifier}.weight` (`[classes, features]`), read
/// from the file's header alone. `classifier` is the model's
/// [`PretrainedCfg::classifier`](crate::PretrainedCfg::classifier) (`head.fc`).
pub fn classes_in_weights(path: &Path, classifier: &str) -> Result<usize, WeightsError> {
    let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
    let format = |message: String| WeightsError::Format { path: path.to_path_buf(), message };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| format(format!("no header length: {e}")))?;
    let n = u64::from_le_bytes(n);
    let len = f.metadata().map_err(io)?.len();
    if n > 100 << 20 || n + 8 > len {
        return Err(format(format!("a header of {n} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| format(format!("header: {e}")))?;
    let key = format!("{classifier}.weight");
    let shape = header
        .get(&key)
        .and_then(|t| t.get("shape"))
        .and_then(|s| s.as_array())
        .ok_or_else(|| format(format!("no tensor `{key}` (the classifier), so the class count is unknown")))?;
    match shape.as_slice() {
        [rows, _] => rows.as_u64().map(|r| r as usize).ok_or_else(|| format(format!("`{key}`: bad shape {shape:?}"))),
        _ => Err(format(format!("`{key}` has shape {shape:?}, not [classes, features]"))),
    }
}

/// Builds `name` (a registry name or a TOML variant) for `classes` classes and gives it
/// `weights`. With [`ModelWeights::File`] the class count is the file's and `classes` is
/// ignored.
///
/// # Example
/// ```
/// use burn_flex::{Flex, FlexDevice};
/// use exvit_zoo::{load_model, save_safetensors, ModelWeights};
///
/// let dev = FlexDevice;
/// let a = load_model::<Flex>("mobilevit_xxs", ModelWeights::Init { seed: 3 }, 10, &dev).unwrap();
/// let path = std::env::temp_dir().join(format!("exvit-load-doc-{}.safetensors", std::process::id()));
/// save_safetensors(&a, &path, Default::default()).unwrap();
/// // The file's classifier says 10 classes, whatever `classes` says.
/// let b = load_model::<Flex>("mobilevit_xxs", ModelWeights::File(&path), 1000, &dev).unwrap();
/// assert_eq!(b.num_classes(), 10);
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn load_model<B: Backend>(
    name: &str,
    weights: ModelWeights<'_>,
    classes: usize,
    device: &B::Device,
) -> Result<MobileVit<B>, LoadError> {
    let default_classifier = crate::PretrainedCfg::default().classifier;
    let (classes, seed) = match weights {
        ModelWeights::Init { seed } | ModelWeights::Backbone { seed, .. } => (classes, seed),
        ModelWeights::File(path) => {
            // The classifier key is the model's; a registry or TOML model names it.
            let classifier = resolve_model(name, 1).map(|c| c.pretrained.classifier).unwrap_or(default_classifier);
            (classes_in_weights(path, &classifier)?, 0)
        }
    };
    let cfg = resolve_model(name, classes)?;
    B::seed(device, seed);
    let model: MobileVit<B> = cfg.init(device);
    Ok(match weights {
        ModelWeights::Init { .. } => model,
        ModelWeights::File(path) => load_safetensors(model, path, LoadMode::Strict)?.0,
        ModelWeights::Backbone { path, .. } => load_safetensors(model, path, LoadMode::FromBackbone)?.0,
    })
}
