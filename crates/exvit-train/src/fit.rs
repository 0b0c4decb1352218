//! The training loop: epochs of steps from a sampler, batches from the loader, one
//! [`Trainer::step`] each, from any [`Position`] (a fresh start or a resume). Callers observe
//! every step (to log, checkpoint or stop) through a callback.

use std::ops::ControlFlow;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_data::loader::{Loader, LoaderConfig};
use exvit_data::sampler::{Fixed, MultiScale, Replica, StepPlan};
use exvit_data::{DataError, Dataset};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::Position;
use crate::trainer::{batch_tensors, Classifier, StepStats, TrainError, Trainer};

/// How batches are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// One resolution.
    Fixed(Fixed),
    /// ml-cvnets' multi-scale variable batches.
    MultiScale(MultiScale),
}

impl Sampling {
    /// The epoch's steps, each of `accum` micro-batches.
    pub fn steps(&self, n: usize, seed: u64, epoch: u64, replica: Replica, accum: usize) -> Vec<StepPlan> {
        match self {
            Sampling::Fixed(f) => f
                .batches(n, seed, epoch, replica)
                .chunks(accum.max(1))
                .map(|c| StepPlan { micro: c.to_vec() })
                .collect(),
            Sampling::MultiScale(m) => m.steps(n, seed, epoch, replica, accum),
        }
    }
}

/// What `fit` runs.
#[derive(Debug, Clone)]
pub struct FitPlan {
    /// Batches.
    pub sampling: Sampling,
    /// Micro-batches per step.
    pub accum: usize,
    /// Epochs in all.
    pub epochs: u64,
    /// Seed of the sampler and the augmentation.
    pub seed: u64,
    /// This replica.
    pub replica: Replica,
    /// The loader (its transform, workers, …; its seed is replaced by `seed`).
    pub loader: LoaderConfig,
}

/// Why training stopped early.
#[derive(Debug, Error)]
pub enum FitError {
    /// The data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The step (a non-finite loss or gradient).
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// Trains from `from` to the end of `plan` (or until `on_step` breaks), and returns the
/// position reached. `on_step` sees the trainer after each step with the position after it.
pub fn fit<B, M>(
    trainer: &mut Trainer<B, M>,
    dataset: &Arc<Dataset>,
    plan: &FitPlan,
    from: Position,
    device: &B::Device,
    mut on_step: impl FnMut(&Trainer<B, M>, Position, &StepStats) -> ControlFlow<()>,
) -> Result<Position, FitError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B>,
    M::InnerModule: Module<B::InnerBackend>,
{
    let mut pos = from;
    let mut cfg = plan.loader.clone();
    cfg.seed = plan.seed;
    while pos.epoch < plan.epochs {
        let steps = plan.sampling.steps(dataset.samples.len(), plan.seed, pos.epoch, plan.replica, plan.accum);
        let start = pos.step_in_epoch as usize;
        if start < steps.len() {
            let micro_plans: Vec<_> = steps.iter().flat_map(|s| s.micro.clone()).collect();
            let first_micro: usize = steps[..start].iter().map(|s| s.micro.len()).sum();
            let mut loader = Loader::start(dataset.clone(), micro_plans, pos.epoch, first_micro, cfg.clone())?;
            for step in &steps[start..] {
                let mut micro = Vec::with_capacity(step.micro.len());
                for _ in 0..step.micro.len() {
                    let batch = loader.next().expect("the loader yields every planned batch")?;
                    let (x, y, _) = batch_tensors::<B>(batch, device);
                    micro.push((x, y));
                }
                let stats = trainer.step(&micro, pos.epoch)?;
                pos.step_in_epoch += 1;
                pos.iteration = trainer.iteration;
                if on_step(trainer, pos, &stats).is_break() {
                    return Ok(pos);
                }
            }
        }
        pos.epoch += 1;
        pos.step_in_epoch = 0;
    }
    Ok(pos)
}
