//! Runs: training that writes a run directory ([`exvit_rundir`] holds its formats; the
//! [`RunWriter`] writes it).
//!
//! `resume` continues from the newest checkpoint; the metrics rows after it are dropped and
//! recomputed, so a resumed run's table equals an uninterrupted one's (timings aside).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_data::loader::{Loader, LoaderConfig};
use exvit_data::sampler::{Fixed, Replica};
use exvit_data::transform::{TrainTransform, Transform};
use exvit_data::Dataset;
use exvit_rundir::{MetricKind, MetricRow, Predictions};
use exvit_zoo::{load_safetensors_with, LoadMode, MobileVit, NonFinite};
use thiserror::Error;

use crate::checkpoint::{load_checkpoint, Position};
pub use crate::config::{ConfigError, RunConfig};
use crate::fit::{fit, FitPlan, Sampling};
use crate::guard::{check_finite, Fingerprint, GuardBoard};
use crate::trainer::{batch_tensors, evaluate_ranked, EvalStats, GradReduce, Trainer};
pub use crate::writer::RunWriter;

/// Why a run cannot start or continue.
#[derive(Debug, Error)]
pub enum RunError {
    /// The config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--resume` on a directory with no checkpoint.
    #[error("{}: no checkpoint to resume from", dir.display())]
    NoCheckpoint {
        /// The run directory.
        dir: PathBuf,
    },
    /// Data-parallel replicas (names the replica where one is at fault).
    #[error("{0}")]
    Replicas(String),
    /// A file of the run directory.
    #[error(transparent)]
    RunDir(#[from] exvit_rundir::RunDirError),
    /// A file written directly.
    #[error(transparent)]
    File(#[from] exvit_common::FileError),
    /// Weights (`init_from`, or the run's own weights files).
    #[error(transparent)]
    Weights(#[from] exvit_zoo::WeightsError),
    /// The data.
    #[error(transparent)]
    Data(#[from] exvit_data::DataError),
    /// Training stopped.
    #[error(transparent)]
    Fit(#[from] crate::fit::FitError),
    /// A checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A guard against silent failures fired (a non-finite tensor, diverged replicas).
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    /// The run directory is being written by another process.
    #[error(transparent)]
    Lock(#[from] exvit_common::LockError),
}

/// What the caller sees as training goes (for a progress bar).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Epoch.
    pub epoch: u64,
    /// Steps done in the epoch.
    pub step_in_epoch: u64,
    /// Steps in the epoch.
    pub steps_in_epoch: u64,
    /// The step's loss.
    pub loss: f64,
    /// LR.
    pub lr: f64,
    /// Images per second over the step.
    pub img_per_s: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Where it stopped.
    pub position: Position,
    /// Whether it was interrupted (Ctrl-C) before the end.
    pub interrupted: bool,
    /// The last evaluation, when there was one.
    pub last_eval: Option<(EvalStats, Option<EvalStats>)>,
}

/// Evaluates `model` on `ds`, in dataset order, through the loader configured by `lc` (its
/// transform, normalisation and workers): the statistics, and each image's label rank.
pub fn evaluate_on<B: Backend, M: crate::trainer::Classifier<B>>(
    model: &M,
    ds: &Arc<Dataset>,
    lc: LoaderConfig,
    size: usize,
    batch: usize,
    device: &B::Device,
) -> Result<(EvalStats, Vec<u32>), RunError> {
    let plan = Fixed::eval(batch, size).batches(ds.samples.len(), 0, 0, Replica::default());
    let loader = Loader::start(ds.clone(), plan, 0, 0, lc)?;
    let mut first_err = None;
    let stats = evaluate_ranked(
        model,
        loader.map_while(|b| match b {
            Ok(b) => {
                let (x, _, labels) = batch_tensors::<B>(b, device);
                Some((x, labels))
            }
            Err(e) => {
                first_err = Some(e);
                None
            }
        }),
    );
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(stats),
    }
}

/// The model a run starts from: initialised from the backend's generator seeded with the run's
/// seed (so that a run is reproducible, and a resumed run's first process and an uninterrupted
/// one agree), then the trunk from `init_from` when set.
pub fn initial_model<B: Backend>(
    cfg: &RunConfig,
    classes: usize,
    device: &B::Device,
) -> Result<MobileVit<B>, RunError> {
    let model_cfg = cfg.model_config(classes)?;
    B::seed(device, cfg.seed);
    let mut model: MobileVit<B> = model_cfg.init(device);
    if let Some(w) = &cfg.init_from {
        model = load_safetensors_with(model, w, LoadMode::FromBackbone, NonFinite::allow_if(cfg.allow_nonfinite))?.0;
    }
    Ok(model)
}

/// Trains the run described by `cfg` (fresh, or resumed from its newest checkpoint when
/// `resume`), until the end or until `stop` is set (Ctrl-C), when it checkpoints and returns.
/// The run directory is locked meanwhile ([`lock_run_dir`]).
pub fn train_run<B: AutodiffBackend>(
    cfg: &RunConfig,
    resume: bool,
    stop: &AtomicBool,
    device: &B::Device,
    progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError> {
    let _lock = lock_run_dir(cfg)?;
    let role = ReplicaRole::<B> {
        replica: Replica::default(),
        initial: None,
        after_update: None,
        reduce: None,
        guard: None,
        data: None,
    };
    train_replica(cfg, resume, &|_| stop.load(Ordering::SeqCst), device, role, progress)
}

/// Locks the run directory `cfg.out` for this run ([`exvit_common::DirLock`]): a second run
/// writing it, from this process or another, is refused with [`RunError::Lock`] naming the
/// holder; a lock left by a killed run is taken over.
pub fn lock_run_dir(cfg: &RunConfig) -> Result<exvit_common::DirLock, RunError> {
    Ok(exvit_common::DirLock::acquire(&cfg.out, "training")?)
}

/// What one data-parallel replica of a run is (the plain run: replica 0 of 1).
pub struct ReplicaRole<B: AutodiffBackend> {
    /// Rank and world size: the replica reads its shard of each epoch; rank 0 alone evaluates
    /// and writes the run's files.
    pub replica: Replica,
    /// The starting weights, on this replica's device (every replica must start from the
    /// same ones); `None`: [`initial_model`] here.
    pub initial: Option<MobileVit<B>>,
    /// The trainer's [`Trainer::after_update`].
    pub after_update: Option<fn(MobileVit<B>) -> MobileVit<B>>,
    /// The trainer's [`Trainer::reduce`].
    pub reduce: Option<GradReduce<B::InnerBackend>>,
    /// Where the replicas compare their fingerprints; `None` (one replica): each check is the
    /// finiteness of this replica's tensors only.
    pub guard: Option<Arc<GuardBoard>>,
    /// The train and validation sets when already opened by [`RunConfig::validate`] (shared by
    /// the replicas: a large folder is listed once); `None`: validated here.
    pub data: Option<(Arc<Dataset>, Option<Arc<Dataset>>)>,
}

/// [`train_run`] as one replica of a data-parallel run. `stop(iteration)` is asked after each
/// step and must give every replica the same answer for the same iteration (else the others
/// wait for it in the next gradient all-reduce).
pub fn train_replica<B: AutodiffBackend>(
    cfg: &RunConfig,
    resume: bool,
    stop: &(dyn Fn(u64) -> bool + Sync),
    device: &B::Device,
    role: ReplicaRole<B>,
    mut progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError> {
    let started = std::time::Instant::now();
    let (train, val) = match role.data {
        Some(data) => data,
        None => cfg.validate()?,
    };
    let replica = role.replica;
    let writer = RunWriter::new(cfg, replica.rank == 0);
    // Only rank 0 evaluates.
    let val = if replica.rank == 0 { val } else { None };
    let model = match role.initial {
        Some(m) => m,
        None => initial_model(cfg, train.classes.len(), device)?,
    };
    let mut trainer = Trainer::new(model, cfg.recipe);
    if replica.rank != 0 {
        // Only rank 0's EMA is evaluated and saved.
        trainer.ema = None;
    }
    trainer.after_update = role.after_update;
    trainer.reduce = role.reduce;
    let guard = role.guard;
    if let Some(f) = trainer.after_update {
        trainer.model = f(trainer.model.clone());
    }
    let (mut pos, mut rows) = if resume {
        resume_state(writer.dir(), &mut trainer, NonFinite::allow_if(cfg.allow_nonfinite))?
    } else {
        Default::default()
    };
    writer.write_config()?;
    let sampling = match &cfg.multi_scale {
        Some(ms) => Sampling::MultiScale(ms.clone()),
        None => Sampling::Fixed(Fixed::train(cfg.batch, cfg.size)),
    };
    let mut loader = LoaderConfig::new(
        Transform::Train(TrainTransform {
            filter: cfg.interpolation,
            scale: cfg.rrc_scale,
            ..TrainTransform::new(cfg.size)
        }),
        cfg.seed,
    );
    if let Some(w) = cfg.workers {
        loader.workers = w;
    }
    let plan =
        FitPlan { sampling: sampling.clone(), accum: cfg.accum, epochs: cfg.epochs, seed: cfg.seed, replica, loader };
    let mut best = rows.iter().filter(|r| r.kind == MetricKind::Eval).map(|r| r.top1).fold(f64::NEG_INFINITY, f64::max);
    let mut last_eval = None;
    let mut interrupted = false;
    let mut step_timer = std::time::Instant::now();
    let mut error: Option<RunError> = None;
    while pos.epoch < cfg.epochs && !interrupted {
        let steps_in_epoch = sampling.steps(train.samples.len(), cfg.seed, pos.epoch, replica, cfg.accum).len() as u64;
        let epoch_plan = FitPlan { epochs: pos.epoch + 1, ..plan.clone() };
        let reached = fit(&mut trainer, &train, &epoch_plan, pos, device, |t, p, s| {
            let secs = step_timer.elapsed().as_secs_f64();
            step_timer = std::time::Instant::now();
            rows.push(MetricRow {
                kind: MetricKind::Train,
                epoch: p.epoch,
                iteration: p.iteration,
                lr: s.lr,
                loss: s.loss,
                img_per_s: s.images as f64 / secs,
                resolution: s.resolution as u64,
                batch: s.images as u64,
                ..Default::default()
            });
            progress(Progress {
                epoch: p.epoch,
                step_in_epoch: p.step_in_epoch,
                steps_in_epoch,
                loss: s.loss,
                lr: s.lr,
                img_per_s: s.images as f64 / secs,
            });
            // The guards, before anything is saved: a bad model never becomes a checkpoint.
            if cfg.guard_every > 0 && p.iteration % cfg.guard_every == 0 || p.step_in_epoch == steps_in_epoch {
                let fp = Fingerprint::of(&t.model.valid());
                let verdict = match &guard {
                    Some(board) => board.check(p.iteration, replica.rank, fp),
                    None => check_finite(&fp, p.iteration, replica.rank),
                };
                if let Err(e) = verdict {
                    error = Some(e.into());
                    return ControlFlow::Break(());
                }
            }
            let stop_now = stop(p.iteration) || cfg.max_iterations.is_some_and(|m| p.iteration >= m);
            let periodic = cfg.checkpoint_every.is_some_and(|k| k > 0 && p.iteration % k == 0);
            if (periodic || stop_now) && p.step_in_epoch < steps_in_epoch {
                if let Err(e) = writer.save(t, p, &rows) {
                    error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            if stop_now {
                interrupted = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = error.take() {
            return Err(e);
        }
        pos = reached;
        if interrupted {
            break;
        }
        // End of the epoch: evaluate, checkpoint.
        if let Some(v) = &val {
            let (row, stats) = evaluate_epoch(cfg, &trainer, v, pos, &writer, device)?;
            if row.top1 > best {
                best = row.top1;
                writer.save_best(&trainer, pos)?;
            }
            rows.push(row);
            last_eval = Some(stats);
        }
        writer.save(&trainer, pos, &rows)?;
    }
    writer.write_provenance(started.elapsed().as_secs_f64(), pos, replica.world)?;
    Ok(RunSummary { position: pos, interrupted, last_eval })
}

/// The position and metrics rows to continue from: the newest checkpoint (loaded into
/// `trainer`), and the rows up to it (an evaluation row of an unfinished epoch dropped).
fn resume_state<B: AutodiffBackend>(
    dir: &exvit_rundir::RunDir,
    trainer: &mut Trainer<B, MobileVit<B>>,
    nonfinite: NonFinite,
) -> Result<(Position, Vec<MetricRow>), RunError> {
    let (_, newest) =
        dir.checkpoints().pop().ok_or_else(|| RunError::NoCheckpoint { dir: dir.path().to_path_buf() })?;
    let pos = load_checkpoint(&newest, trainer, nonfinite)?.0;
    let mut rows = Vec::new();
    if dir.metrics().exists() {
        rows = exvit_rundir::read_metrics(&dir.metrics())?;
        rows.retain(|r| {
            r.iteration <= pos.iteration
                && !(r.kind == MetricKind::Eval && r.iteration == pos.iteration && pos.step_in_epoch != 0)
        });
    }
    tracing::info!(checkpoint = %newest.display(), epoch = pos.epoch, iteration = pos.iteration, "resuming");
    Ok((pos, rows))
}

/// Evaluates the model (and its EMA) at the end of an epoch on `val`, writes the per-image
/// predictions, and returns the metrics row and the statistics.
fn evaluate_epoch<B: AutodiffBackend>(
    cfg: &RunConfig,
    trainer: &Trainer<B, MobileVit<B>>,
    val: &Arc<Dataset>,
    pos: Position,
    writer: &RunWriter,
    device: &B::Device,
) -> Result<(MetricRow, (EvalStats, Option<EvalStats>)), RunError> {
    let (eval_tf, eval_size) = cfg.eval_transform();
    let mut lc = LoaderConfig::new(eval_tf, 0);
    if let Some(w) = cfg.workers {
        lc.workers = w;
    }
    let (m, ranks) = evaluate_on(&trainer.model.valid(), val, lc.clone(), eval_size, cfg.batch, device)?;
    let (e, ema_ranks) = match &trainer.ema {
        Some(ema) => {
            let (e, r) = evaluate_on(&ema.model, val, lc, eval_size, cfg.batch, device)?;
            (Some(e), Some(r))
        }
        None => (None, None),
    };
    let labels = val.samples.iter().map(|s| s.label as u32).collect();
    writer.write_predictions(&Predictions { epoch: pos.epoch - 1, labels, ranks, ema_ranks })?;
    let row = MetricRow {
        kind: MetricKind::Eval,
        epoch: pos.epoch - 1,
        iteration: pos.iteration,
        loss: m.loss,
        top1: m.top1,
        top5: m.top5,
        ema_top1: e.map_or(f64::NAN, |e| e.top1),
        ema_top5: e.map_or(f64::NAN, |e| e.top5),
        ..Default::default()
    };
    Ok((row, (m, e)))
}
