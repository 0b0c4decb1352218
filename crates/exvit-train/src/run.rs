//! Runs: a directory that holds everything about one training run.
//!
//! ```text
//! RUN_DIR/config.toml          the resolved config (every default written out)
//! RUN_DIR/metrics.parquet      one row per iteration (kind "train") and per evaluation ("eval")
//! RUN_DIR/provenance.json      git commit, config hash, seed, versions, hardware, wall time
//! RUN_DIR/ckpt-NNNNNNNN.safetensors   the last `keep_last` checkpoints (full state)
//! RUN_DIR/best.safetensors     the checkpoint with the best validation top-1 (model)
//! RUN_DIR/model.safetensors, ema.safetensors   the latest weights, timm keys (for `exvit eval`)
//! ```
//! Every file is written atomically. `resume` continues from the newest checkpoint; the
//! metrics rows after it are dropped and recomputed, so a resumed run's table equals an
//! uninterrupted one's (timings aside).

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_data::loader::{Loader, LoaderConfig};
use exvit_data::resize::Filter;
use exvit_data::sampler::{Fixed, MultiScale, Replica};
use exvit_data::transform::{EvalTransform, TrainTransform, Transform};
use exvit_data::Dataset;
use exvit_zoo::{load_safetensors, resolve_model, save_safetensors, LoadMode, MobileVit};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{load_checkpoint, save_checkpoint, Position};
use crate::fit::{fit, FitPlan, Sampling};
use crate::trainer::{batch_tensors, evaluate_ranked, EvalStats, TrainConfig, Trainer};

/// Everything a run needs, as `exvit train --config FILE.toml` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A zoo name or a model TOML.
    pub model: String,
    /// The training split (ImageFolder, tar shards, or a CIFAR binary folder).
    pub train_data: PathBuf,
    /// The split to evaluate on after each epoch (optional).
    #[serde(default)]
    pub val_data: Option<PathBuf>,
    /// Split name inside a CIFAR binary folder (train/test).
    #[serde(default)]
    pub cifar_val_split: Option<String>,
    /// The run directory.
    pub out: PathBuf,
    /// Epochs.
    pub epochs: u64,
    /// Seed of the sampler and the augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Training resolution (RandomResizedCrop size) when not multi-scale.
    pub size: usize,
    /// Batch size (per replica).
    pub batch: usize,
    /// ml-cvnets' multi-scale sampler instead of one resolution.
    #[serde(default)]
    pub multi_scale: Option<MultiScale>,
    /// Micro-batches per optimiser step.
    #[serde(default = "one")]
    pub accum: usize,
    /// Loader threads (default: all cores).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Interpolation of the crops and the eval resize.
    #[serde(default = "bilinear")]
    pub interpolation: Filter,
    /// RandomResizedCrop's area range (torchvision's default 0.08–1; a larger floor keeps
    /// layout, as the demo's layout classes need).
    #[serde(default = "rrc_scale")]
    pub rrc_scale: (f64, f64),
    /// Eval: the shorter side is resized to `eval_size / eval_crop_pct`, then center-cropped.
    #[serde(default = "crop_pct")]
    pub eval_crop_pct: f64,
    /// Eval resolution (default: `size`).
    #[serde(default)]
    pub eval_size: Option<usize>,
    /// The recipe (default: ml-cvnets' for `epochs`).
    pub recipe: TrainConfig,
    /// Checkpoint every N iterations (and at each epoch's end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept.
    #[serde(default = "two")]
    pub keep_last: usize,
    /// Initialise the trunk from these weights (`--init-from`).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Stop after this many iterations in all (for tests and smoke runs).
    #[serde(default)]
    pub max_iterations: Option<u64>,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn bilinear() -> Filter {
    Filter::Bilinear
}
fn rrc_scale() -> (f64, f64) {
    (0.08, 1.0)
}
fn crop_pct() -> f64 {
    0.875
}

/// Why a run cannot start or continue.
#[derive(Debug, Error)]
pub enum RunError {
    /// The config file or a value in it.
    #[error("{0}")]
    Config(String),
    /// A file of the run.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The data.
    #[error(transparent)]
    Data(#[from] exvit_data::DataError),
    /// Training stopped.
    #[error(transparent)]
    Fit(#[from] crate::fit::FitError),
    /// A checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

fn file_err(path: &Path) -> impl Fn(String) -> RunError + '_ {
    move |message| RunError::File { path: path.to_path_buf(), message }
}

impl RunConfig {
    /// Reads a config, refusing unknown keys and wrong types with the file's name.
    pub fn from_toml_file(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| RunError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks everything that can be checked before any work: the model resolves, the data
    /// opens and is not empty, numbers are in range, the run directory can be written.
    pub fn validate(&self) -> Result<(Arc<Dataset>, Option<Arc<Dataset>>), RunError> {
        let bad = |m: String| Err(RunError::Config(m));
        if self.epochs == 0 || self.batch == 0 || self.size == 0 || self.accum == 0 {
            return bad("epochs, batch, size and accum must be positive".into());
        }
        let (lo, hi) = self.rrc_scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return bad(format!("rrc_scale must satisfy 0 < low <= high <= 1, not ({lo}, {hi})"));
        }
        if !(0.0 < self.eval_crop_pct && self.eval_crop_pct <= 1.0) {
            return bad(format!("eval_crop_pct {} is not in (0, 1]", self.eval_crop_pct));
        }
        let train = Arc::new(open_data(&self.train_data, "train")?);
        if train.samples.is_empty() {
            return bad(format!("train_data {}: no samples", self.train_data.display()));
        }
        let val = match &self.val_data {
            Some(p) => Some(Arc::new(open_data(p, self.cifar_val_split.as_deref().unwrap_or("test"))?)),
            None => None,
        };
        if let Some(v) = &val {
            if v.classes.len() != train.classes.len() {
                return bad(format!("val_data has {} classes, train_data {}", v.classes.len(), train.classes.len()));
            }
        }
        resolve_model(&self.model, train.classes.len())
            .map_err(|e| RunError::Config(format!("model `{}`: {e}", self.model)))?;
        std::fs::create_dir_all(&self.out)
            .map_err(|e| RunError::Config(format!("out {}: cannot create: {e}", self.out.display())))?;
        let probe = self.out.join(".write-test");
        std::fs::write(&probe, b"")
            .map_err(|e| RunError::Config(format!("out {}: not writable: {e}", self.out.display())))?;
        let _ = std::fs::remove_file(probe);
        Ok((train, val))
    }
}

fn open_data(path: &Path, cifar_split: &str) -> Result<Dataset, RunError> {
    if !path.exists() {
        return Err(RunError::Config(format!("dataset {} does not exist", path.display())));
    }
    Ok(exvit_data::open_path(path, cifar_split)?)
}

/// One row of `metrics.parquet`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricRow {
    /// `train` or `eval`.
    pub kind: String,
    /// Epoch.
    pub epoch: u64,
    /// Global iteration (after the step, or at the evaluation).
    pub iteration: u64,
    /// LR of the step.
    pub lr: f64,
    /// Train: the step's loss; eval: the model's loss.
    pub loss: f64,
    /// Eval: model top-1 / top-5 (%).
    pub top1: f64,
    /// Eval: model top-5.
    pub top5: f64,
    /// Eval: EMA top-1.
    pub ema_top1: f64,
    /// Eval: EMA top-5.
    pub ema_top5: f64,
    /// Train: images per second.
    pub img_per_s: f64,
    /// Train: resolution.
    pub resolution: u64,
    /// Train: images in the step.
    pub batch: u64,
}

fn metrics_frame(rows: &[MetricRow]) -> PolarsResult<DataFrame> {
    let col_f = |name: &str, f: fn(&MetricRow) -> f64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let col_u = |name: &str, f: fn(&MetricRow) -> u64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    DataFrame::new_infer_height(vec![
        Column::new("kind".into(), rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>()),
        col_u("epoch", |r| r.epoch),
        col_u("iteration", |r| r.iteration),
        col_f("lr", |r| r.lr),
        col_f("loss", |r| r.loss),
        col_f("top1", |r| r.top1),
        col_f("top5", |r| r.top5),
        col_f("ema_top1", |r| r.ema_top1),
        col_f("ema_top5", |r| r.ema_top5),
        col_f("img_per_s", |r| r.img_per_s),
        col_u("resolution", |r| r.resolution),
        col_u("batch", |r| r.batch),
    ])
}

/// Writes `rows` to `path` atomically.
pub fn write_metrics(rows: &[MetricRow], path: &Path) -> Result<(), RunError> {
    let mut df = metrics_frame(rows).map_err(|e| file_err(path)(e.to_string()))?;
    write_atomic(path, |f| ParquetWriter::new(f).finish(&mut df).map(drop).map_err(|e| e.to_string()))
}

/// Per-image results of the latest evaluation of a run (`predictions.parquet`): for each
/// validation image, in dataset order, its label and the rank of that label in the model's
/// scores (0 = top-1 correct), and the same for the EMA. Two runs evaluated on the same split
/// can be compared image by image (the report's paired bootstrap).
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// The epoch evaluated (0-based).
    pub epoch: u64,
    /// Labels.
    pub labels: Vec<u32>,
    /// The model's rank of each label (`u32::MAX`: a NaN score).
    pub ranks: Vec<u32>,
    /// The EMA's, when the run keeps one.
    pub ema_ranks: Option<Vec<u32>>,
}

/// Writes `p` to `path` atomically.
pub fn write_predictions(p: &Predictions, path: &Path) -> Result<(), RunError> {
    let err = file_err(path);
    let n = p.labels.len();
    if p.ranks.len() != n || p.ema_ranks.as_ref().is_some_and(|r| r.len() != n) {
        return Err(err(format!("{n} labels but {} ranks", p.ranks.len())));
    }
    let mut cols = vec![
        Column::new("image".into(), (0..n as u32).collect::<Vec<_>>()),
        Column::new("epoch".into(), vec![p.epoch; n]),
        Column::new("label".into(), p.labels.clone()),
        Column::new("rank".into(), p.ranks.clone()),
    ];
    if let Some(r) = &p.ema_ranks {
        cols.push(Column::new("ema_rank".into(), r.clone()));
    }
    let mut df = DataFrame::new_infer_height(cols).map_err(|e| err(e.to_string()))?;
    write_atomic(path, |f| ParquetWriter::new(f).finish(&mut df).map(drop).map_err(|e| e.to_string()))
}

/// Reads `predictions.parquet`; names the file and the column on bad input.
pub fn read_predictions(path: &Path) -> Result<Predictions, RunError> {
    let err = file_err(path);
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let df = ParquetReader::new(file).finish().map_err(|e| err(e.to_string()))?;
    let u32s = |name: &str| -> Result<Vec<u32>, RunError> {
        let c = df.column(name).map_err(|e| err(format!("column `{name}`: {e}")))?;
        let c = c.u32().map_err(|e| err(format!("column `{name}`: {e}")))?;
        c.iter().map(|v| v.ok_or_else(|| err(format!("column `{name}`: a null value")))).collect()
    };
    let epoch = df
        .column("epoch")
        .and_then(|c| c.u64().map(|c| c.get(0).unwrap_or(0)))
        .map_err(|e| err(format!("column `epoch`: {e}")))?;
    let ema_ranks =
        if df.get_column_names().iter().any(|c| c.as_str() == "ema_rank") { Some(u32s("ema_rank")?) } else { None };
    Ok(Predictions { epoch, labels: u32s("label")?, ranks: u32s("rank")?, ema_ranks })
}

/// Reads `metrics.parquet` back into rows.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, RunError> {
    let err = file_err(path);
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let df = ParquetReader::new(file).finish().map_err(|e| err(e.to_string()))?;
    let f = |name: &str| -> Result<Vec<f64>, RunError> {
        df.column(name).and_then(|c| c.f64().map(|c| c.into_no_null_iter().collect())).map_err(|e| err(e.to_string()))
    };
    let u = |name: &str| -> Result<Vec<u64>, RunError> {
        df.column(name).and_then(|c| c.u64().map(|c| c.into_no_null_iter().collect())).map_err(|e| err(e.to_string()))
    };
    let kind: Vec<String> = df
        .column("kind")
        .and_then(|c| c.str().map(|c| (0..c.len()).map(|i| c.get(i).unwrap_or_default().to_string()).collect()))
        .map_err(|e| err(e.to_string()))?;
    let (epoch, iteration, lr, loss, top1, top5, et1, et5, ips, res, batch) = (
        u("epoch")?,
        u("iteration")?,
        f("lr")?,
        f("loss")?,
        f("top1")?,
        f("top5")?,
        f("ema_top1")?,
        f("ema_top5")?,
        f("img_per_s")?,
        u("resolution")?,
        u("batch")?,
    );
    Ok((0..kind.len())
        .map(|i| MetricRow {
            kind: kind[i].clone(),
            epoch: epoch[i],
            iteration: iteration[i],
            lr: lr[i],
            loss: loss[i],
            top1: top1[i],
            top5: top5[i],
            ema_top1: et1[i],
            ema_top5: et5[i],
            img_per_s: ips[i],
            resolution: res[i],
            batch: batch[i],
        })
        .collect())
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

fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let it = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((it, e.path()))
        })
        .collect();
    v.sort();
    v
}

fn eval_transform(cfg: &RunConfig) -> (Transform, usize) {
    let size = cfg.eval_size.unwrap_or(cfg.size);
    (Transform::Eval(EvalTransform::from_crop_pct(size, cfg.eval_crop_pct, cfg.interpolation)), size)
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
    let model_cfg =
        resolve_model(&cfg.model, classes).map_err(|e| RunError::Config(format!("model `{}`: {e}", cfg.model)))?;
    B::seed(device, cfg.seed);
    let mut model: MobileVit<B> = model_cfg.init(device);
    if let Some(w) = &cfg.init_from {
        model = load_safetensors(model, w, LoadMode::FromBackbone).map_err(|e| RunError::Config(e.to_string()))?.0;
    }
    Ok(model)
}

/// Trains the run described by `cfg` (fresh, or resumed from its newest checkpoint when
/// `resume`), until the end or until `stop` is set (Ctrl-C), when it checkpoints and returns.
pub fn train_run<B: AutodiffBackend>(
    cfg: &RunConfig,
    resume: bool,
    stop: &AtomicBool,
    device: &B::Device,
    progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError> {
    let role = ReplicaRole::<B> { replica: Replica::default(), initial: None, after_update: None, data: None };
    train_replica(cfg, resume, &|_| stop.load(Ordering::SeqCst), device, role, progress)
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
    let classes = train.classes.len();
    let out = cfg.out.clone();
    let replica = role.replica;
    let writer = replica.rank == 0;
    let val = if writer { val } else { None };
    let model = match role.initial {
        Some(m) => m,
        None => initial_model(cfg, classes, device)?,
    };
    let mut trainer = Trainer::new(model, cfg.recipe);
    if !writer {
        // Only rank 0's EMA is evaluated and saved.
        trainer.ema = None;
    }
    trainer.after_update = role.after_update;
    if let Some(f) = trainer.after_update {
        trainer.model = f(trainer.model.clone());
    }
    let metrics_path = out.join("metrics.parquet");
    let (mut pos, mut rows) = (Position::default(), Vec::new());
    if resume {
        let (_, newest) = checkpoints(&out)
            .pop()
            .ok_or_else(|| RunError::Config(format!("{}: no checkpoint to resume from", out.display())))?;
        pos = load_checkpoint(&newest, &mut trainer)?.0;
        if metrics_path.exists() {
            rows = read_metrics(&metrics_path)?;
            rows.retain(|r| {
                r.iteration <= pos.iteration
                    && !(r.kind == "eval" && r.iteration == pos.iteration && pos.step_in_epoch != 0)
            });
        }
        tracing::info!(checkpoint = %newest.display(), epoch = pos.epoch, iteration = pos.iteration, "resuming");
    }
    let text = toml::to_string_pretty(cfg).map_err(|e| RunError::Config(e.to_string()))?;
    if writer {
        atomic_write(&out.join("config.toml"), text.as_bytes())?;
    }
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
    let (eval_tf, eval_size) = eval_transform(cfg);
    let mut eval_lc = LoaderConfig::new(eval_tf, 0);
    if let Some(w) = cfg.workers {
        eval_lc.workers = w;
    }
    let meta = BTreeMap::from([("config".to_string(), text.clone()), ("seed".to_string(), cfg.seed.to_string())]);
    let mut best = rows.iter().filter(|r| r.kind == "eval").map(|r| r.top1).fold(f64::NEG_INFINITY, f64::max);
    let mut last_eval = None;
    let mut interrupted = false;
    let mut step_timer = std::time::Instant::now();
    let mut error: Option<RunError> = None;
    let save = |t: &Trainer<B, MobileVit<B>>, p: Position, rows: &[MetricRow]| -> Result<(), RunError> {
        if !writer {
            return Ok(());
        }
        // Metrics first, then the checkpoint: the checkpoint is the commit point, so after a
        // crash the metrics always cover it (rows past it are dropped on resume).
        write_metrics(rows, &metrics_path)?;
        let path = out.join(format!("ckpt-{:08}.safetensors", p.iteration));
        save_checkpoint(&path, t, p, &meta)?;
        for (_, old) in checkpoints(&out).iter().rev().skip(cfg.keep_last.max(1)) {
            let _ = std::fs::remove_file(old);
        }
        save_safetensors(&t.model.valid(), &out.join("model.safetensors"), Default::default())
            .map_err(|e| file_err(&out)(e.to_string()))?;
        if let Some(ema) = &t.ema {
            save_safetensors(&ema.model, &out.join("ema.safetensors"), Default::default())
                .map_err(|e| file_err(&out)(e.to_string()))?;
        }
        Ok(())
    };
    while pos.epoch < cfg.epochs && !interrupted {
        let steps_in_epoch = sampling.steps(train.samples.len(), cfg.seed, pos.epoch, replica, cfg.accum).len() as u64;
        let epoch_plan = FitPlan { epochs: pos.epoch + 1, ..plan.clone() };
        let reached = fit(&mut trainer, &train, &epoch_plan, pos, device, |t, p, s| {
            let secs = step_timer.elapsed().as_secs_f64();
            step_timer = std::time::Instant::now();
            rows.push(MetricRow {
                kind: "train".into(),
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
            let stop_now = stop(p.iteration) || cfg.max_iterations.is_some_and(|m| p.iteration >= m);
            let periodic = cfg.checkpoint_every.is_some_and(|k| k > 0 && p.iteration % k == 0);
            if (periodic || stop_now) && p.step_in_epoch < steps_in_epoch {
                if let Err(e) = save(t, p, &rows) {
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
            let (m, ranks) = evaluate_on(&trainer.model.valid(), v, eval_lc.clone(), eval_size, cfg.batch, device)?;
            let (e, ema_ranks) = match &trainer.ema {
                Some(ema) => {
                    let (e, r) = evaluate_on(&ema.model, v, eval_lc.clone(), eval_size, cfg.batch, device)?;
                    (Some(e), Some(r))
                }
                None => (None, None),
            };
            let preds = Predictions {
                epoch: pos.epoch - 1,
                labels: v.samples.iter().map(|s| s.label as u32).collect(),
                ranks,
                ema_ranks,
            };
            write_predictions(&preds, &out.join("predictions.parquet"))?;
            rows.push(MetricRow {
                kind: "eval".into(),
                epoch: pos.epoch - 1,
                iteration: pos.iteration,
                loss: m.loss,
                top1: m.top1,
                top5: m.top5,
                ema_top1: e.map_or(f64::NAN, |e| e.top1),
                ema_top5: e.map_or(f64::NAN, |e| e.top5),
                ..Default::default()
            });
            if m.top1 > best {
                best = m.top1;
                save_checkpoint(&out.join("best.safetensors"), &trainer, pos, &meta)?;
            }
            last_eval = Some((m, e));
        }
        save(&trainer, pos, &rows)?;
    }
    if writer {
        write_provenance(cfg, &text, &out, started.elapsed().as_secs_f64(), pos, replica.world)?;
    }
    Ok(RunSummary { position: pos, interrupted, last_eval })
}

/// Writes `path` through a temporary file beside it (same file system), then renames it; on
/// any error the temporary file is removed and the error names `path`.
fn write_atomic(path: &Path, write: impl FnOnce(File) -> Result<(), String>) -> Result<(), RunError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let r = File::create(&tmp)
        .map_err(|e| e.to_string())
        .and_then(write)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(file_err(path))
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    write_atomic(path, |mut f| std::io::Write::write_all(&mut f, bytes).map_err(|e| e.to_string()))
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn write_provenance(
    cfg: &RunConfig,
    text: &str,
    out: &Path,
    secs: f64,
    pos: Position,
    replicas: usize,
) -> Result<(), RunError> {
    // The commit the binary was built from (crates/exvit-train/build.rs), and whether its tree
    // had uncommitted changes: not the commit checked out when the run ends.
    let git = Some(env!("EXVIT_GIT_COMMIT")).filter(|c| !c.is_empty());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let prov = format!(
        "{{\n  \"git_commit\": {},\n  \"git_dirty\": {},\n  \"config_hash\": \"{:016x}\",\n  \"seed\": {},\n  \"exvit_version\": \"{}\",\n  \"burn_version\": \"0.21.0\",\n  \"cpu\": {},\n  \"threads\": {},\n  \"replicas\": {},\n  \"wall_seconds_this_process\": {:.3},\n  \"epoch\": {},\n  \"iteration\": {}\n}}\n",
        git.map_or("null".to_string(), |g| format!("\"{g}\"")),
        env!("EXVIT_GIT_DIRTY"),
        fnv1a(text),
        cfg.seed,
        env!("CARGO_PKG_VERSION"),
        cpu.map_or("null".to_string(), |c| format!("{c:?}")),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        replicas,
        secs,
        pos.epoch,
        pos.iteration
    );
    atomic_write(&out.join("provenance.json"), prov.as_bytes())
}
