//! Data-parallel training on several GPUs of one machine (cargo feature `ddp`), with burn
//! 0.21's collective engine: NCCL all-reduce on `CubeBackend<CudaRuntime>`.
//!
//! One thread per device, each a replica of the run ([`train_replica`]): the model is built and
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::backend::distributed::{DistributedBackend, DistributedConfig, DistributedParamId, ReduceOperation};
use burn::tensor::backend::AutodiffBackend;
use exvit_data::sampler::Replica;
use exvit_zoo::MobileVit;

use crate::run::{initial_model, train_replica, Progress, ReplicaRole, RunConfig, RunError, RunSummary};

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

enum Message {
    Progress(Progress),
    Done(usize, Result<RunSummary, RunError>),
}

/// Trains the run `cfg` data-parallel over `devices` (one replica each; `cfg.batch` is the batch
/// of one replica). Returns rank 0's summary, or the first replica's error. `stop` (Ctrl-C) is
/// read once per iteration for all replicas. When a replica fails, the others may be waiting in
/// an all-reduce that will never complete: the caller should end the process after reporting
/// the error (the CLI does); the last checkpoint stands.
pub fn train_data_parallel<B>(
    cfg: &RunConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    devices: &[B::Device],
    mut progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError>
where
    B: DistributedBackend + 'static,
{
    let world = devices.len();
    if world == 0 {
        return Err(RunError::Replicas("data parallel needs at least one device".into()));
    }
    let (train, val) = cfg.validate()?;
    let classes = train.classes.len();
    let mut cfg = cfg.clone();
    if cfg.workers.is_none() {
        // Each replica runs its own loader: share the cores between them.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        cfg.workers = Some((cores / world).max(1));
    }
    let model_cfg = cfg.model_config(classes)?;
    let initial = initial_model::<Autodiff<B>>(&cfg, classes, &devices[0])?;
    B::start_communication_server(devices, DistributedConfig { all_reduce_op: ReduceOperation::Mean });
    // The stop decision for an iteration: the first replica to ask reads the flag, the others
    // get its answer.
    let decisions: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    for (rank, device) in devices.iter().cloned().enumerate() {
        let (cfg, model_cfg, tx) = (cfg.clone(), model_cfg.clone(), tx.clone());
        let data = Some((train.clone(), val.clone()));
        // Loaded into a fresh model on the replica's device: its own tensors and running state.
        let record = initial.clone().into_record();
        let (stop, decisions) = (stop.clone(), decisions.clone());
        std::thread::Builder::new()
            .name(format!("exvit-replica-{rank}"))
            .spawn(move || {
                let decide = move |iteration: u64| {
                    let mut d = decisions.lock().unwrap_or_else(|e| e.into_inner());
                    let answer = *d.entry(iteration).or_insert_with(|| stop.load(Ordering::SeqCst));
                    // Keep the map small: every replica is within a step of the others.
                    while d.len() > 64 {
                        d.pop_first();
                    }
                    answer
                };
                let model: MobileVit<Autodiff<B>> = model_cfg.init(&device).load_record(record);
                let role = ReplicaRole {
                    replica: Replica { rank, world },
                    initial: Some(model),
                    after_update: Some(mark_distributed::<Autodiff<B>>),
                    data,
                };
                let progress_tx = tx.clone();
                let result = train_replica::<Autodiff<B>>(&cfg, resume, &decide, &device, role, |p| {
                    if rank == 0 {
                        let _ = progress_tx.send(Message::Progress(p));
                    }
                });
                let _ = tx.send(Message::Done(rank, result));
            })
            .map_err(|e| RunError::Replicas(format!("starting replica {rank}: {e}")))?;
    }
    drop(tx);
    let mut summary = None;
    let mut done = 0;
    for message in rx {
        match message {
            Message::Progress(p) => progress(p),
            Message::Done(rank, result) => {
                let s = result?;
                done += 1;
                if rank == 0 {
                    summary = Some(s);
                }
            }
        }
        if done == world {
            break;
        }
    }
    B::close_communication_server(&devices[0]);
    summary.ok_or_else(|| RunError::Replicas("replica 0 ended without a result".into()))
}
