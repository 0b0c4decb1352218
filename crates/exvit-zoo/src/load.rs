//! A model by name, with its weights: what every command that computes starts with.

use std::path::Path;

use burn::prelude::*;
use exvit_common::safetensors_header::{read_header, shape_of, HeaderError};

use crate::mobilevit::MobileVit;
use crate::registry::{resolve_model, ZooError};
use exvit_common::nonfinite::NonFinite;

use crate::weights::{load_safetensors_with, LoadMode, WeightsError};

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
    let format = |message: String| WeightsError::Format { path: path.to_path_buf(), message };
    let header = read_header(path).map_err(|e| match e {
        HeaderError::File(e) => WeightsError::Io { path: e.path, source: e.source },
        HeaderError::Format { message, .. } => format(message),
    })?;
    let key = format!("{classifier}.weight");
    match shape_of(&header, &key).as_deref() {
        Some([0, _]) => Err(format(format!("`{key}` has no rows (a classifier of 0 classes)"))),
        Some([rows, _]) => Ok(*rows as usize),
        Some(shape) => Err(format(format!("`{key}` has shape {shape:?}, not [classes, features]"))),
        None => Err(format(format!("no tensor `{key}` (the classifier), so the class count is unknown"))),
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
    load_model_with(name, weights, classes, device, NonFinite::Refuse)
}

/// [`load_model`], with NaN/Inf in the weights file refused (as `load_model` does) or allowed.
pub fn load_model_with<B: Backend>(
    name: &str,
    weights: ModelWeights<'_>,
    classes: usize,
    device: &B::Device,
    nonfinite: NonFinite,
) -> Result<MobileVit<B>, LoadError> {
    // With a file the class count is the file's; `classes` only has to be valid until then.
    let mut cfg = resolve_model(name, if matches!(weights, ModelWeights::File(_)) { classes.max(1) } else { classes })?;
    let seed = match weights {
        ModelWeights::Init { seed } | ModelWeights::Backbone { seed, .. } => seed,
        ModelWeights::File(path) => {
            // The class count is the file's classifier's, under the model's classifier key.
            cfg.num_classes = classes_in_weights(path, &cfg.pretrained.classifier)?;
            0
        }
    };
    B::seed(device, seed);
    let model: MobileVit<B> = cfg.init(device);
    Ok(match weights {
        ModelWeights::Init { .. } => model,
        ModelWeights::File(path) => load_safetensors_with(model, path, LoadMode::Strict, nonfinite)?.0,
        ModelWeights::Backbone { path, .. } => load_safetensors_with(model, path, LoadMode::FromBackbone, nonfinite)?.0,
    })
}
