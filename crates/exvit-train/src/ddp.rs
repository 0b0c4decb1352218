//! Data-parallel training on several GPUs of one machine (cargo feature `ddp`), with burn
//! 0.21's collective engine: NCCL all-reduce on `CubeBackend<CudaRuntime>`.
//!
//! One thread per device, each a replica of the run ([`crate::run::train_replica`], through the
//! orchestration of [`crate::replicas::run_replicas`], which the thread path shares): the model is built and
//! seeded once, and every replica loads those same weights (and the same parameter ids) on its
//! own device; each marks its parameters distributed (again after every optimiser step, which
//! rebuilds them), so that `backward` all-reduces (mean) each parameter's gradient across the
//! replicas as soon as it is complete. The optimiser steps then see identical gradients and the
//! replicas stay identical, as under PyTorch DDP. Each replica reads its shard of every epoch
//! (`Replica { rank, world }`, padded like `DistributedSampler`), so the global batch is
//! `world x batch`. BatchNorm normalises with each replica's own batch (no SyncBN, as cvnets
//! trains MobileViT); rank 0's running statistics are the ones saved, and only rank 0 keeps an
//! EMA. Rank 0 alone evaluates and writes the run's files. A stop (Ctrl-C, `max_iterations`)
//! is decided once per iteration for all replicas. See docs/distributed.md.
//!
//! burn 0.21's `distributed` feature makes `Autodiff<B>` an autodiff backend only for backends
//! with a collective (`B: DistributedBackend`); burn-flex has none, so a `ddp` build cannot
//! train on the CPU. The averaging itself is proven on the CPU without this feature: replicas
//! simulated as micro-batches give one device's update (`tests/engine.rs`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::distributed::{DistributedBackend, DistributedConfig, DistributedParamId, ReduceOperation};
use burn::tensor::backend::AutodiffBackend;
use exvit_zoo::MobileVit;

use crate::replicas::{run_replicas, Averaging};
use crate::run::{Progress, RunConfig, RunError, RunSummary};

/// Marks every trainable parameter for gradient all-reduce, keyed by its parameter id (equal on
/// every replica: they all loaded one record).
struct MarkDistributed;

impl<B: AutodiffBackend> ModuleMapper<B> for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor =
            if tensor.is_require_grad() { tensor.set_distributed(DistributedParamId::from(id.val())) } else { tensor };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// `model` with its trainable parameters marked distributed.
pub fn mark_distributed<B: AutodiffBackend>(model: MobileVit<B>) -> MobileVit<B> {
    model.map(&mut MarkDistributed)
}

/// Trains the run `cfg` data-parallel over `devices` (one replica each; `cfg.batch` is the batch
/// of one replica), through [`run_replicas`] with the gradients averaged inside `backward`.
/// Returns rank 0's summary, or the first replica's error. When a replica fails, the others may
/// be waiting in an all-reduce that will never complete: the caller should end the process
/// after reporting the error (the CLI does); the last checkpoint stands.
pub fn train_data_parallel<B>(
    cfg: &RunConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    devices: &[B::Device],
    progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError>
where
    B: DistributedBackend + 'static,
{
    if devices.is_empty() {
        return Err(RunError::Replicas("data parallel needs at least one device".into()));
    }
    B::start_communication_server(devices, DistributedConfig { all_reduce_op: ReduceOperation::Mean });
    let result = run_replicas::<Autodiff<B>>(
        cfg,
        resume,
        stop,
        devices,
        Averaging::InBackward(mark_distributed::<Autodiff<B>>),
        progress,
    );
    if result.is_ok() {
        B::close_communication_server(&devices[0]);
    }
    result
}
