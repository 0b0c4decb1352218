//! Checkpoints: the whole training state in one safetensors file, written atomically (a
//! temporary file, then a rename), so a crash never leaves half a checkpoint.
//!
//! Tensors, flattened, keyed by timm's paths: `model.<key>` (parameters and running
//! statistics), `ema.<key>`, `optim.m.<key>`, `optim.v.<key>`. burn's `ParamId`s are random in
//! each process, so the optimiser state is saved by path, never by id. The metadata holds the
//! position (epoch, step within the epoch, global iteration, optimiser step) and any caller
//! strings (the resolved config, the seed). Every random draw of training (augmentation,
//! sampler) is a function of (seed, epoch, position), so the position is all a resume needs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use exvit_zoo::{flat_tensors, map_flat, write_safetensors, RawTensor};
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

use crate::adamw::Moments;
use crate::trainer::{Classifier, Trainer};

/// Where training is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Epoch (0-based) of the next step.
    pub epoch: u64,
    /// Steps of that epoch already done.
    pub step_in_epoch: u64,
    /// Global iteration (steps done in all).
    pub iteration: u64,
}

/// Why a checkpoint cannot be written or read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Reading or writing the file.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Tensors of the checkpoint hold NaN or Inf (refused unless `NonFinite::Allow`).
    #[error("{path}: {count}; refusing this checkpoint (load it anyway with --allow-nonfinite)")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Which tensors, how many values.
        count: exvit_common::NonFiniteCount,
    },
    /// The file is not a checkpoint of this model.
    #[error("{path}: {message}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not match (names the tensor or field).
        message: String,
    },
}

fn f32_bytes(t: Tensor<impl Backend, 1>) -> (Vec<usize>, Vec<u8>) {
    let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32 tensor");
    (vec![v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes `trainer`'s state at `pos` to `path` (atomically), with `extra` metadata.
pub fn save_checkpoint<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>>(
    path: &Path,
    trainer: &Trainer<B, M>,
    pos: Position,
    extra: &BTreeMap<String, String>,
) -> Result<(), CheckpointError>
where
    M::InnerModule: Module<B::InnerBackend>,
{
    let mut tensors: Vec<RawTensor> = Vec::new();
    for (k, t) in flat_tensors(&trainer.model.valid()) {
        let (s, b) = f32_bytes(t);
        tensors.push((format!("model.{k}"), Dtype::F32, s, b));
    }
    if let Some(ema) = &trainer.ema {
        for (k, t) in flat_tensors(&ema.model) {
            let (s, b) = f32_bytes(t);
            tensors.push((format!("ema.{k}"), Dtype::F32, s, b));
        }
    }
    for (k, st) in &trainer.optim.state {
        let (s, b) = f32_bytes(st.m.clone());
        tensors.push((format!("optim.m.{k}"), Dtype::F32, s, b));
        let (s, b) = f32_bytes(st.v.clone());
        tensors.push((format!("optim.v.{k}"), Dtype::F32, s, b));
    }
    let mut meta: HashMap<String, String> = extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("exvit.epoch".into(), pos.epoch.to_string());
    meta.insert("exvit.step_in_epoch".into(), pos.step_in_epoch.to_string());
    meta.insert("exvit.iteration".into(), pos.iteration.to_string());
    meta.insert("exvit.optim_step".into(), trainer.optim.step.to_string());
    meta.insert("exvit.ema_updates".into(), trainer.ema.as_ref().map_or(0, |e| e.updates).to_string());
    write_safetensors(path, &tensors, meta).map_err(|e| CheckpointError::Io {
        path: path.into(),
        // The file is named once (the writer's error names it too).
        message: match e {
            exvit_zoo::WeightsError::Io { source, .. } => source.to_string(),
            e => e.to_string(),
        },
    })
}

/// Restores `trainer` from `path`; returns the position and the metadata. Every model, EMA
/// and optimiser tensor must be present with the right size: a missing or mis-sized one is an
/// error that names it, and `trainer` is left untouched. So is a tensor holding NaN or Inf,
/// unless `nonfinite` is [`NonFinite::Allow`](exvit_common::NonFinite::Allow).
pub fn load_checkpoint<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>>(
    path: &Path,
    trainer: &mut Trainer<B, M>,
    nonfinite: exvit_common::NonFinite,
) -> Result<(Position, BTreeMap<String, String>), CheckpointError>
where
    M::InnerModule: Module<B::InnerBackend>,
{
    let io = |message: String| CheckpointError::Io { path: path.into(), message };
    let mismatch = |message: String| CheckpointError::Mismatch { path: path.into(), message };
    let bytes = std::fs::read(path).map_err(|e| io(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| mismatch(format!("not a safetensors file: {e}")))?;
    let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| mismatch(format!("not a safetensors file: {e}")))?;
    let num = |k: &str| -> Result<u64, CheckpointError> {
        meta.get(k)
            .ok_or_else(|| mismatch(format!("metadata `{k}` is missing")))?
            .parse()
            .map_err(|_| mismatch(format!("metadata `{k}` is not a number")))
    };
    let pos = Position {
        epoch: num("exvit.epoch")?,
        step_in_epoch: num("exvit.step_in_epoch")?,
        iteration: num("exvit.iteration")?,
    };
    let read = |name: &str, n: usize| -> Result<Vec<f32>, CheckpointError> {
        let t = st.tensor(name).map_err(|_| mismatch(format!("tensor `{name}` is missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != [n] {
            return Err(mismatch(format!("tensor `{name}` is {:?} {:?}, expected F32 [{n}]", t.dtype(), t.shape())));
        }
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
    };
    // Read and check everything first, then change the trainer.
    let model_keys: Vec<(String, usize)> =
        flat_tensors(&trainer.model.valid()).into_iter().map(|(k, t)| (k, t.dims()[0])).collect();
    let mut model_vals = BTreeMap::new();
    for (k, n) in &model_keys {
        model_vals.insert(k.clone(), read(&format!("model.{k}"), *n)?);
    }
    let mut ema_vals = BTreeMap::new();
    if trainer.ema.is_some() {
        for (k, n) in &model_keys {
            ema_vals.insert(k.clone(), read(&format!("ema.{k}"), *n)?);
        }
    }
    let mut optim = BTreeMap::new();
    for name in st.names() {
        if let Some(k) = name.strip_prefix("optim.m.") {
            let n = model_keys
                .iter()
                .find(|(mk, _)| mk == k)
                .map(|(_, n)| *n)
                .ok_or_else(|| mismatch(format!("optimiser state for `{k}`, which the model does not have")))?;
            optim.insert(k.to_string(), (read(name, n)?, read(&format!("optim.v.{k}"), n)?));
        }
    }
    if nonfinite == exvit_common::NonFinite::Refuse {
        let mut count = exvit_common::NonFiniteCount::default();
        for (k, v) in &model_vals {
            count.add(&format!("model.{k}"), v);
        }
        for (k, v) in &ema_vals {
            count.add(&format!("ema.{k}"), v);
        }
        for (k, (m, v)) in &optim {
            count.add(&format!("optim.m.{k}"), m);
            count.add(&format!("optim.v.{k}"), v);
        }
        if !count.is_clean() {
            return Err(CheckpointError::NonFinite { path: path.into(), count });
        }
    }
    let device = trainer.model.devices().into_iter().next().unwrap_or_default();
    let to_tensor =
        |v: &Vec<f32>| Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(v.clone(), [v.len()]), &device);
    trainer.model = map_flat(trainer.model.clone(), |k, _t: Tensor<B, 1>| {
        model_vals.get(k).map(|v| Tensor::from_inner(to_tensor(v)))
    });
    if let Some(ema) = &mut trainer.ema {
        ema.model = map_flat(ema.model.clone(), |k, _t: Tensor<B::InnerBackend, 1>| ema_vals.get(k).map(to_tensor));
        ema.updates = num("exvit.ema_updates")?;
    }
    trainer.optim.state =
        optim.iter().map(|(k, (m, v))| (k.clone(), Moments { m: to_tensor(m), v: to_tensor(v) })).collect();
    trainer.optim.step = num("exvit.optim_step")?;
    trainer.iteration = pos.iteration;
    if let Some(f) = trainer.after_update {
        trainer.model = f(trainer.model.clone());
    }
    Ok((pos, meta))
}
