//! Weights in and out as safetensors, with timm's key names and dtypes.
//!
//! Files written here load into timm with `load_state_dict(strict=True)`: float tensors are
//! F32 and `num_batches_tracked` is an int64 scalar, as in a PyTorch `state_dict`. Files
//! written by timm / `safetensors.torch.save_file` load here, from F32, F16, BF16 or F64.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use exvit_common::nonfinite::{NonFinite, NonFiniteCount};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

use crate::state::{named_tensors, update_named};

/// How strictly a file must match the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Every key of the model is in the file with the same shape, and the file has no other
    /// key (timm's `strict=True`).
    Strict,
    /// Only the shared trunk (`stem.*`, `stages.*`) must match. Other tensors (`final_conv`,
    /// ExShortcuts) are loaded where the file has them with the same shape; the classifier
    /// (`head.*`) is never taken from a backbone, since its input layout differs between models
    /// even where the shapes agree. What is not loaded keeps its initialisation and is reported.
    FromBackbone,
}

/// Why a tensor of the model was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The model has the key; the file does not.
    Missing {
        /// Key.
        key: String,
        /// Shape in the model.
        model: Vec<usize>,
    },
    /// The file has the key; the model does not.
    Unexpected {
        /// Key.
        key: String,
        /// Shape in the file.
        file: Vec<usize>,
    },
    /// The classifier, which from-backbone loading never takes.
    Classifier {
        /// Key.
        key: String,
    },
    /// Both have the key, with different shapes.
    Shape {
        /// Key.
        key: String,
        /// Shape in the file.
        file: Vec<usize>,
        /// Shape in the model.
        model: Vec<usize>,
    },
}

impl Problem {
    /// The key the problem is about.
    pub fn key(&self) -> &str {
        match self {
            Problem::Missing { key, .. }
            | Problem::Unexpected { key, .. }
            | Problem::Classifier { key }
            | Problem::Shape { key, .. } => key,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { key, model } => write!(f, "missing key `{key}` (model shape {model:?})"),
            Problem::Unexpected { key, file } => write!(f, "unexpected key `{key}` (file shape {file:?})"),
            Problem::Classifier { key } => write!(f, "classifier `{key}` is not taken from a backbone checkpoint"),
            Problem::Shape { key, file, model } => {
                write!(f, "shape mismatch for `{key}`: file {file:?} vs model {model:?}")
            }
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Keys loaded from the file.
    pub loaded: Vec<String>,
    /// Model keys left freshly initialised, with the reason (from-backbone mode).
    pub fresh: Vec<Problem>,
    /// File keys the model has no use for (from-backbone mode).
    pub unused: Vec<Problem>,
}

/// Errors of weight I/O.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A tensor has a dtype that cannot be a weight.
    #[error("{path}: tensor `{key}` has dtype {dtype:?}; weights must be F32, F16, BF16 or F64 (I64 for num_batches_tracked)")]
    Dtype {
        /// File.
        path: PathBuf,
        /// Key.
        key: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// Tensors hold NaN or Inf (refused unless [`NonFinite::Allow`]).
    #[error("{path}: {count}; refusing these weights (load them anyway with --allow-nonfinite)")]
    NonFinite {
        /// File.
        path: PathBuf,
        /// Which tensors, how many values.
        count: NonFiniteCount,
    },
    /// The file does not match the model.
    #[error("{path} does not match the model ({} problem(s)):\n  {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Mismatch {
        /// File.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// A tensor read from a file, converted to f32.
struct FileTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn read_file(path: &Path) -> Result<BTreeMap<String, FileTensor>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| WeightsError::Format { path: path.into(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (key, view) in st.tensors() {
        let d = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::I64 if key.ends_with("num_batches_tracked") => {
                d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            dtype => return Err(WeightsError::Dtype { path: path.into(), key, dtype }),
        };
        out.insert(key, FileTensor { shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// Shapes are equal, counting PyTorch's 0-d scalar (`num_batches_tracked`) as burn's `[1]`.
fn same_shape(file: &[usize], model: &[usize]) -> bool {
    file == model || (file.is_empty() && model == [1])
}

fn is_trunk(key: &str) -> bool {
    key.starts_with("stem.") || key.starts_with("stages.")
}

/// Loads `path` into `model`.
///
/// In [`LoadMode::Strict`] any missing key, unexpected key or wrong shape is an error that
/// lists them all. In [`LoadMode::FromBackbone`] only problems in the trunk are errors; the
/// rest is reported in [`LoadReport::fresh`] and [`LoadReport::unused`]. A tensor holding NaN
/// or Inf is refused ([`WeightsError::NonFinite`], naming them); see [`load_safetensors_with`].
pub fn load_safetensors<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    mode: LoadMode,
) -> Result<(M, LoadReport), WeightsError> {
    load_safetensors_with(model, path, mode, NonFinite::Refuse)
}

/// [`load_safetensors`], with NaN/Inf in the loaded tensors refused or allowed.
pub fn load_safetensors_with<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    mode: LoadMode,
    nonfinite: NonFinite,
) -> Result<(M, LoadReport), WeightsError> {
    let mut file = read_file(path)?;
    let model_shapes: Vec<(String, Vec<usize>)> =
        named_tensors(&model).into_iter().map(|t| (t.key, t.data.shape.as_slice().to_vec())).collect();
    let mut report = LoadReport::default();
    let mut errors = Vec::new();
    let mut take: HashMap<String, FileTensor> = HashMap::new();
    for (key, shape) in &model_shapes {
        if mode == LoadMode::FromBackbone && key.starts_with("head.") {
            if let Some(t) = file.remove(key) {
                report.unused.push(Problem::Unexpected { key: key.clone(), file: t.shape });
            }
            report.fresh.push(Problem::Classifier { key: key.clone() });
            continue;
        }
        let problem = match file.remove(key) {
            None => Problem::Missing { key: key.clone(), model: shape.clone() },
            Some(t) if !same_shape(&t.shape, shape) => {
                Problem::Shape { key: key.clone(), file: t.shape, model: shape.clone() }
            }
            Some(t) => {
                take.insert(key.clone(), t);
                report.loaded.push(key.clone());
                continue;
            }
        };
        match mode {
            LoadMode::FromBackbone if !is_trunk(key) => report.fresh.push(problem),
            _ => errors.push(problem),
        }
    }
    for (key, t) in file {
        let problem = Problem::Unexpected { key, file: t.shape };
        match mode {
            LoadMode::Strict => errors.push(problem),
            LoadMode::FromBackbone => report.unused.push(problem),
        }
    }
    if !errors.is_empty() {
        return Err(WeightsError::Mismatch { path: path.into(), problems: errors });
    }
    if nonfinite == NonFinite::Refuse {
        // Only what is loaded: an unused tensor (from-backbone) cannot poison the model.
        let mut count = NonFiniteCount::default();
        for key in &report.loaded {
            count.add(key, &take[key].values);
        }
        if !count.is_clean() {
            return Err(WeightsError::NonFinite { path: path.into(), count });
        }
    }
    let model = update_named(model, |key, shape| take.remove(key).map(|t| TensorData::new(t.values, shape.to_vec())));
    Ok((model, report))
}

/// Saves `model` to `path` atomically (a temporary file in the same folder, then a rename),
/// with timm's keys and dtypes: F32 tensors, and `num_batches_tracked` as an I64 scalar.
pub fn save_safetensors<B: Backend, M: Module<B>>(
    model: &M,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<(), WeightsError> {
    let named = named_tensors(model);
    let mut buffers: Vec<RawTensor> = Vec::with_capacity(named.len());
    for t in named {
        let shape = t.data.shape.as_slice().to_vec();
        let values: Vec<f32> = t.data.convert::<f32>().to_vec().expect("f32 data");
        if t.key.ends_with("num_batches_tracked") {
            let bytes = (values[0].round() as i64).to_le_bytes().to_vec();
            buffers.push((t.key, Dtype::I64, vec![], bytes));
        } else {
            buffers.push((t.key, Dtype::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
    }
    write_safetensors(path, &buffers, metadata)
}

/// One tensor to write: key, dtype, shape and little-endian bytes.
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes `tensors` to `path` atomically: a temporary file in the same folder, then a rename
/// (the temporary file is removed if the rename fails).
///
/// # Panics
/// When a tensor's bytes do not match its dtype and shape (a caller bug).
pub fn write_safetensors(
    path: &Path,
    tensors: &[RawTensor],
    metadata: HashMap<String, String>,
) -> Result<(), WeightsError> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, dt, s, b)| (k.clone(), TensorView::new(*dt, s.clone(), b).expect("consistent tensor view")))
        .collect();
    let tmp = exvit_common::atomic::tmp_path(path);
    let io = |source| WeightsError::Io { path: path.into(), source };
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        match e {
            safetensors::SafeTensorError::IoError(source) => io(source),
            e => WeightsError::Format { path: path.into(), message: e.to_string() },
        }
    })?;
    exvit_common::atomic::commit(&tmp, path).map_err(|e| io(e.source))
}
