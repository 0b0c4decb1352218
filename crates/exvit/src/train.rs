//! `exvit train` and `exvit eval`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use exvit_data::resize::Filter;
use exvit_data::transform::Transform;
use exvit_train::run::{evaluate_on, train_run, RunConfig};
use exvit_train::TrainConfig;
use exvit_zoo::{load_safetensors_with, resolve_model, LoadMode, MobileVit, NonFinite};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A run config (TOML; see configs/). Flags below override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint (its config.toml).
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Zoo name or model TOML.
    #[arg(long)]
    model: Option<String>,
    /// Training split (ImageFolder, tar shards, or a CIFAR binary folder).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation split, evaluated after each epoch.
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Run directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<u64>,
    /// Training resolution.
    #[arg(long)]
    size: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Start from these weights (timm keys): the trunk must match; the classifier, never taken
    /// from a backbone, and what the file lacks (ExShortcuts) keep their initialisation.
    /// Overrides the config's `init_from`.
    #[arg(long, conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Start from the model's pretrained weights (timm's, on the Hugging Face hub; the hub cache,
    /// else a download), as `--init-from` does: the classifier starts fresh. A model with no
    /// weights of its own (an ExMobileViT) names the one whose trunk it shares.
    #[arg(long, conflicts_with_all = ["resume", "init_from"])]
    pretrained: bool,
    /// Loader threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Checkpoint every N iterations (and at each epoch's end).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop after N iterations in all.
    #[arg(long)]
    max_iterations: Option<u64>,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision (overrides the config's `recipe.precision`): `f32`, or `bf16` (CUDA
    /// only; f32 master weights, optimiser state and EMA; docs/training.md).
    #[arg(long)]
    precision: Option<exvit_train::Precision>,
    /// Data parallel on threads: N replicas on the one `--device` (cpu, or one wgpu device), the
    /// batch per replica, gradients averaged between backward and the optimiser step
    /// (docs/distributed.md).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Check the model every N iterations (every tensor finite; replicas identical); 0: at the
    /// end of each epoch only. Overrides the config's `guard_every` (default 10).
    #[arg(long)]
    guard_every: Option<u64>,
    /// Load `--init-from` weights and the checkpoint at `--resume` even when they hold NaN or
    /// Inf (refused by default, naming the tensors).
    #[arg(long)]
    allow_nonfinite: bool,
    /// Data parallel over these GPUs, e.g. `cuda:0,cuda:1,cuda:2,cuda:3`: one replica each, the
    /// batch per replica (docs/distributed.md). Only in a build with the `ddp` feature.
    #[cfg(feature = "ddp")]
    #[arg(long, conflicts_with_all = ["device", "replicas"])]
    devices: Option<String>,
}

fn build_config(a: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match (&a.config, &a.resume) {
        (Some(p), _) => RunConfig::from_toml_file(p)?,
        (None, Some(dir)) => RunConfig::from_toml_file(&dir.join("config.toml"))
            .with_context(|| format!("resuming {}", dir.display()))?,
        (None, None) => {
            let need = |v: Option<&str>, flag: &str| {
                v.map(str::to_string).with_context(|| format!("{flag} is required without --config"))
            };
            let epochs = a.epochs.unwrap_or(1);
            RunConfig {
                model: need(a.model.as_deref(), "--model")?,
                train_data: a.data.clone().context("--data is required without --config")?,
                val_data: a.val_data.clone(),
                cifar_val_split: None,
                out: a.out.clone().context("--out is required without --config")?,
                epochs,
                seed: 0,
                size: a.size.unwrap_or(256),
                batch: a.batch.unwrap_or(64),
                multi_scale: None,
                accum: 1,
                workers: None,
                interpolation: Filter::Bilinear,
                rrc_scale: (0.08, 1.0),
                eval_crop_pct: 0.875,
                eval_size: None,
                recipe: TrainConfig::cvnets(epochs),
                checkpoint_every: None,
                keep_last: 2,
                init_from: None,
                max_iterations: None,
                guard_every: 10,
                allow_nonfinite: false,
            }
        }
    };
    if a.resume.is_none() {
        if let Some(v) = &a.model {
            cfg.model = v.clone();
        }
        if let Some(v) = &a.data {
            cfg.train_data = v.clone();
        }
        if let Some(v) = &a.val_data {
            cfg.val_data = Some(v.clone());
        }
        if let Some(v) = &a.out {
            cfg.out = v.clone();
        }
        if let Some(v) = a.epochs {
            cfg.epochs = v;
            cfg.recipe.schedule.max_epochs = v;
        }
        if let Some(v) = a.size {
            cfg.size = v;
        }
        if let Some(v) = a.batch {
            cfg.batch = v;
        }
        if let Some(v) = a.seed {
            cfg.seed = v;
        }
        if let Some(v) = &a.init_from {
            cfg.init_from = Some(v.clone());
        }
        if a.pretrained {
            cfg.init_from = Some(crate::common::pretrained_weights(&cfg.model)?);
        }
    }
    if let Some(v) = a.precision {
        cfg.recipe.precision = v;
    }
    if let Some(v) = a.workers {
        cfg.workers = Some(v);
    }
    if let Some(v) = a.checkpoint_every {
        cfg.checkpoint_every = Some(v);
    }
    if let Some(v) = a.max_iterations {
        cfg.max_iterations = Some(v);
    }
    if let Some(v) = a.guard_every {
        cfg.guard_every = v;
    }
    cfg.allow_nonfinite = a.allow_nonfinite;
    Ok(cfg)
}

pub fn train(a: TrainArgs) -> Result<()> {
    let device = crate::device::parse_device(&a.device)?;
    let cfg = build_config(&a)?;
    crate::device::check_precision(device, cfg.recipe.precision)?;
    cfg.validate().context("checking the run config")?;
    let stop = crate::common::stop_on_ctrl_c("finishing the step, writing a checkpoint, then exiting")?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {msg}").unwrap().progress_chars("=> "),
    );
    let progress = |p: exvit_train::run::Progress| {
        bar.set_length(p.steps_in_epoch);
        bar.set_position(p.step_in_epoch);
        bar.set_prefix(format!("{}", p.epoch + 1));
        bar.set_message(format!("loss {:.4} lr {:.2e} {:.0} img/s", p.loss, p.lr, p.img_per_s));
    };
    #[cfg(feature = "ddp")]
    let summary = match &a.devices {
        Some(list) => {
            let indices = parse_devices(list)?;
            crate::device::check_precision(crate::device::Device::Cuda(indices[0]), cfg.recipe.precision)?;
            let devices: Vec<_> = indices.iter().map(|&index| burn::backend::cuda::CudaDevice { index }).collect();
            exvit_train::ddp::train_data_parallel::<burn::backend::Cuda>(
                &cfg,
                a.resume.is_some(),
                stop.clone(),
                &devices,
                progress,
            )
            .map_err(anyhow::Error::from)
        }
        None => train_single(device, &cfg, a.resume.is_some(), a.replicas, &stop, progress),
    };
    #[cfg(not(feature = "ddp"))]
    let summary = train_single(device, &cfg, a.resume.is_some(), a.replicas, &stop, progress);
    let summary = summary.with_context(|| format!("training run {}", cfg.out.display()))?;
    bar.finish_and_clear();
    let p = summary.position;
    if summary.interrupted {
        println!(
            "stopped at epoch {}, iteration {}; checkpoint in {} (resume with --resume {})",
            p.epoch,
            p.iteration,
            cfg.out.display(),
            cfg.out.display()
        );
    } else {
        println!("done: {} epochs, {} iterations; run in {}", cfg.epochs, p.iteration, cfg.out.display());
    }
    if let Some((m, e)) = summary.last_eval {
        println!(
            "val top-1 {:.2}% top-5 {:.2}% (EMA: {})",
            m.top1,
            m.top5,
            e.map_or("none".to_string(), |e| format!("top-1 {:.2}% top-5 {:.2}%", e.top1, e.top5))
        );
    }
    Ok(())
}

/// One device: the run on `device`, as one replica or `replicas` on threads.
fn train_single(
    device: crate::device::Device,
    cfg: &RunConfig,
    resume: bool,
    replicas: usize,
    stop: &Arc<AtomicBool>,
    progress: impl FnMut(exvit_train::run::Progress),
) -> Result<exvit_train::run::RunSummary> {
    anyhow::ensure!(replicas >= 1, "--replicas must be at least 1");
    Ok(crate::with_autodiff_backend!(device, |B, dev| if replicas == 1 {
        train_run::<Autodiff<B>>(cfg, resume, stop, &dev, progress)
    } else {
        exvit_train::replicas::train_replicas::<Autodiff<B>>(
            cfg,
            resume,
            stop.clone(),
            replicas,
            &dev,
            exvit_train::replicas::Faults::default(),
            progress,
        )
    })?)
}

/// `cuda:0,cuda:1,...` → device indices, each checked (driver, device, NVRTC), no repeats.
#[cfg(feature = "ddp")]
fn parse_devices(list: &str) -> Result<Vec<usize>> {
    let mut indices = Vec::new();
    for item in list.split(',').map(str::trim) {
        match crate::device::parse_device(item)? {
            crate::device::Device::Cuda(i) if !indices.contains(&i) => indices.push(i),
            crate::device::Device::Cuda(i) => anyhow::bail!("--devices {list}: cuda:{i} is listed twice"),
            _ => anyhow::bail!("--devices {list}: data parallel over several GPUs runs on CUDA devices only (threads on one device: --replicas N)"),
        }
    }
    anyhow::ensure!(!indices.is_empty(), "--devices is empty");
    Ok(indices)
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Zoo name or model TOML.
    #[arg(long)]
    model: String,
    /// Weights (safetensors, timm keys), e.g. RUN_DIR/model.safetensors or ema.safetensors.
    #[arg(long, required_unless_present = "pretrained")]
    weights: Option<PathBuf>,
    /// The model's pretrained weights (timm's, on the Hugging Face hub): from the hub cache
    /// timm uses, downloaded into it when missing (docs/models.md#pretrained-weights).
    #[arg(long, conflicts_with = "weights")]
    pretrained: bool,
    /// Dataset folder (a split folder, a folder with splits, or a CIFAR binary folder).
    #[arg(long)]
    data: PathBuf,
    /// Split inside --data.
    #[arg(long, default_value = "val")]
    split: String,
    #[command(flatten)]
    pre: crate::common::Preprocessing,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Write the result as JSON here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Load weights even when they hold NaN or Inf (refused by default, naming the tensors).
    #[arg(long)]
    allow_nonfinite: bool,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let weights = crate::common::weights_or_pretrained(&a.model, a.weights.clone(), a.pretrained)?
        .context("--weights or --pretrained is required")?;
    let (split_dir, ds) = crate::common::open_split(&a.data, &a.split)?;
    let mcfg = resolve_model(&a.model, ds.classes.len()).with_context(|| format!("model `{}`", a.model))?;
    let data = a.pre.resolve(&mcfg.pretrained)?;
    let (tf, norm) = (data.eval_transform(), data.norm);
    let (size, filter) = (tf.crop, tf.filter);
    let device = crate::device::parse_device(&a.device)?;
    let mut lc = exvit_data::loader::LoaderConfig::new(Transform::Eval(tf), 0);
    lc.norm = norm;
    let stats = crate::with_backend!(device, |B, dev| {
        let model: MobileVit<B> = mcfg.init(&dev);
        let (model, _) =
            load_safetensors_with(model, &weights, LoadMode::Strict, NonFinite::allow_if(a.allow_nonfinite))
                .with_context(|| format!("loading {}", weights.display()))?;
        evaluate_on(&model, &ds, lc, size, a.batch, &dev).context("evaluating")?.0
    });
    println!(
        "{} on {} ({} images, {}x{}, resize {} {:?}): top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
        a.model,
        split_dir.display(),
        stats.images,
        size,
        size,
        tf.resize,
        filter,
        stats.top1,
        stats.top5,
        stats.loss
    );
    if let Some(out) = &a.out {
        let json = format!(
            "{{\"model\": {:?}, \"weights\": {:?}, \"data\": {:?}, \"images\": {}, \"resolution\": {}, \"resize\": {}, \"top1\": {}, \"top5\": {}, \"loss\": {}}}\n",
            a.model,
            weights.display().to_string(),
            split_dir.display().to_string(),
            stats.images,
            size,
            tf.resize,
            stats.top1,
            stats.top5,
            stats.loss
        );
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
