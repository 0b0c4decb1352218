//! `exvit report` and `exvit demo`: the study on a small scale, from data to report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use exvit_data::resize::Filter;
use exvit_data::synthetic::{write_demo_dataset, DemoSpec, DEMO_CLASSES};
use exvit_data::transform::{EvalTransform, Normalize};
use exvit_data::Dataset;
use exvit_probe::{
    attention_maps, attention_stats, balanced_subset, cka_caches, extract, probe_caches, write_attention,
    write_attention_maps, write_cka, write_probes, AttentionConfig, AttentionMaps, Cache, Dtype, ExtractConfig,
    Pooling, ProbeConfig, ProbeRow, TapSpec, WeightsRef,
};
use exvit_report::{collect, render, write_report, ReportOptions};
use exvit_train::run::{train_run, RunConfig};
use exvit_train::TrainConfig;
use exvit_zoo::MobileVit;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::open_split;
use crate::device::parse_device;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Folders to read: run directories (config.toml + metrics.parquet) and folders holding
    /// probes.parquet / cka.parquet, searched 3 levels deep.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// The HTML report (report.md and report_figures/ are written beside it).
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
    /// Title.
    #[arg(long, default_value = "exvit report")]
    title: String,
    /// The model the others are compared with (default: the first run's).
    #[arg(long)]
    baseline: Option<String>,
}

pub fn report(a: ReportArgs) -> Result<()> {
    let inputs = collect(&a.dirs).context("collecting the report's inputs")?;
    let opts = ReportOptions { title: a.title, baseline: a.baseline, intro: String::new() };
    let r = render(&inputs, &opts)?;
    let md = write_report(&r, &a.out)?;
    println!(
        "report: {} ({} runs, {} probes, {} CKA pairs, {} figures); markdown: {}",
        a.out.display(),
        inputs.runs.len(),
        inputs.probes.len(),
        inputs.cka.len(),
        r.figures.len(),
        md.display()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// A real dataset folder with `train/` and `val/` (or `test/`) splits, instead of the
    /// embedded procedural dataset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (data, runs, caches, tables, report). A rerun reuses finished work.
    #[arg(long, default_value = "exvit-demo")]
    out: PathBuf,
    /// Models trained: the base, its ExMobileViT variant and the wide-head control.
    #[arg(long, default_value = "mobilevit_xxs,exmobilevit_xxs,mobilevit_xxs_head432")]
    models: String,
    /// Epochs per model.
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Seeds per model (0, 1, …): two give the tables their spread.
    #[arg(long, default_value_t = 2)]
    seeds: u64,
    /// Training and evaluation resolution.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Training images per class of the embedded dataset (validation: a third as many, at
    /// least 2).
    #[arg(long, default_value_t = 160)]
    per_class: usize,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training runs at once, each a child `exvit train` process with one compute thread. At
    /// small resolutions a run does not use two cores (32x32 CIFAR on 2 cores: 350 img/s with 1
    /// thread or 2), so N processes train up to N times as fast. 1: in this process.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// EMA momentum (cvnets: 0.0005 per iteration, a window of ~2000 iterations). The default,
    /// 0.05, suits the demo's ~200 iterations.
    #[arg(long, default_value_t = 0.05)]
    ema_momentum: f64,
    /// Linear warmup length in epochs (cvnets: 3000 iterations).
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    /// Probe on this many training images per class (the first ones, in dataset order); all
    /// when absent. The probes are still evaluated on the whole validation split.
    #[arg(long)]
    probe_train_per_class: Option<usize>,
    /// Input side for the attention analysis. At the demo's 32x32, MobileViT's transformers
    /// see a 2x2 patch grid in stages.2 and a single patch in stages.3 and stages.4, so by
    /// default the attention is measured at twice the training size (off the training
    /// resolution; the report says which size).
    #[arg(long)]
    attention_size: Option<usize>,
    /// Attention statistics over at most this many validation images (balanced over classes).
    #[arg(long, default_value_t = 1000)]
    attention_limit: usize,
}

/// The demo's recipe: cvnets' (AdamW, label smoothing 0.1, linear warmup then cosine), with the
/// warmup shortened to `warmup_epochs` (default one epoch) and the EMA momentum raised (default
/// 0.05, a window of about one demo epoch; cvnets' 0.0005 averages over ~2000 iterations, longer
/// than the whole demo).
fn demo_recipe(a: &DemoArgs, steps_per_epoch: u64) -> TrainConfig {
    let mut r = TrainConfig::cvnets(a.epochs);
    r.schedule.warmup_iters = ((steps_per_epoch as f64 * a.warmup_epochs).round() as u64).max(1);
    r.ema_momentum = Some(a.ema_momentum);
    r
}

pub fn demo(a: DemoArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    anyhow::ensure!(a.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(
        a.ema_momentum > 0.0 && a.ema_momentum <= 1.0,
        "--ema-momentum must be in (0, 1], not {}",
        a.ema_momentum
    );
    anyhow::ensure!(a.warmup_epochs >= 0.0, "--warmup-epochs must be non-negative");
    let started = Instant::now();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (train_dir, val_dir, what) = match &a.data {
        Some(root) => {
            let val = ["val", "test"]
                .iter()
                .map(|s| root.join(s))
                .find(|p| p.is_dir())
                .with_context(|| format!("{}: no val/ or test/ split", root.display()))?;
            (root.join("train"), val, format!("the dataset at {}", root.display()))
        }
        None => {
            let root = a.out.join("data");
            let spec = DemoSpec {
                size: a.size,
                train_per_class: a.per_class,
                val_per_class: (a.per_class / 3).max(2),
                ..DemoSpec::default()
            };
            if !root.join("val").is_dir() {
                tracing::info!("generating the demo dataset in {}", root.display());
                write_demo_dataset(&root, spec)?;
            }
            (
                root.join("train"),
                root.join("val"),
                format!(
                    "exvit's embedded procedural dataset ({} classes: 4 told apart by fine texture, 4 by global layout; {} training and {} validation images of {}x{}, docs/demo.md)",
                    DEMO_CLASSES.len(),
                    spec.train_per_class * DEMO_CLASSES.len(),
                    spec.val_per_class * DEMO_CLASSES.len(),
                    spec.size,
                    spec.size
                ),
            )
        }
    };
    let (_, train_ds) = open_split(&train_dir, "train")?;
    let (_, val_ds) = open_split(&val_dir, "val")?;
    let models: Vec<String> = a.models.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    crate::with_autodiff_backend!(device, |B, dev| study::<B>(
        &a, &models, &train_dir, &val_dir, &train_ds, &val_ds, &dev
    ))?;

    // 5. The report.
    let inputs = collect(std::slice::from_ref(&a.out))?;
    let opts = ReportOptions {
        title: "exvit demo: do early stages carry class information?".into(),
        baseline: models.first().cloned(),
        intro: format!(
            "{} trained for {} epochs ({} seed(s) each, {}x{}, batch {}) on {what}; every tap probed with a logistic regression, for the trained models and at random init; linear CKA between taps; attention distance, entropy and maps at {}x{}. Total wall time {:.0} s on this machine.",
            models.join(", "),
            a.epochs,
            a.seeds,
            a.size,
            a.size,
            a.batch,
            a.attention_size.unwrap_or(2 * a.size),
            a.attention_size.unwrap_or(2 * a.size),
            started.elapsed().as_secs_f64()
        ),
    };
    let r = render(&inputs, &opts)?;
    let html = a.out.join("report.html");
    write_report(&r, &html)?;
    println!("report: {} (and report.md), {:.0} s in all", html.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Steps 1–4 of the demo on backend `B`: train, extract, probe, CKA (files under `a.out`).
#[allow(clippy::too_many_arguments)]
fn study<B: crate::device::TrainBackend>(
    a: &DemoArgs,
    models: &[String],
    train_dir: &Path,
    val_dir: &Path,
    train_ds: &Arc<Dataset>,
    val_ds: &Arc<Dataset>,
    dev: &B::Device,
) -> Result<()> {
    let classes = train_ds.classes.len();
    let steps = train_ds.samples.len().div_ceil(a.batch) as u64;
    let stop = AtomicBool::new(false);

    // 1. Train.
    let mut trained: Vec<(String, u64, PathBuf)> = Vec::new();
    let mut pending: Vec<(RunConfig, bool)> = Vec::new();
    for model in models {
        for seed in 0..a.seeds {
            let out = a.out.join("runs").join(format!("{}-s{seed}", tag_of(model)));
            let cfg = RunConfig {
                model: model.clone(),
                train_data: train_dir.to_path_buf(),
                val_data: Some(val_dir.to_path_buf()),
                cifar_val_split: None,
                out: out.clone(),
                epochs: a.epochs,
                seed,
                size: a.size,
                batch: a.batch,
                multi_scale: None,
                accum: 1,
                workers: None,
                interpolation: Filter::Bilinear,
                rrc_scale: (0.5, 1.0),
                eval_crop_pct: 1.0,
                eval_size: Some(a.size),
                recipe: demo_recipe(a, steps),
                checkpoint_every: None,
                keep_last: 1,
                init_from: None,
                max_iterations: None,
                guard_every: 10,
                allow_nonfinite: false,
            };
            if out.join("model.safetensors").is_file() && out.join("metrics.parquet").is_file() {
                tracing::info!("{}: already trained, reused", out.display());
            } else {
                let resume = out.join("config.toml").is_file();
                pending.push((cfg, resume));
            }
            trained.push((model.clone(), seed, out));
        }
    }
    if a.jobs > 1 && pending.len() > 1 {
        train_in_children(a, &pending)?;
    } else {
        for (cfg, resume) in &pending {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>28} epoch {msg} [{bar:25}] {pos}/{len}").expect("template"),
            );
            bar.set_prefix(format!("{} s{}", cfg.model, cfg.seed));
            let s = train_run::<Autodiff<B>>(cfg, *resume, &stop, dev, |p| {
                bar.set_length(p.steps_in_epoch);
                bar.set_position(p.step_in_epoch);
                bar.set_message(format!("{}/{} loss {:.3}", p.epoch + 1, a.epochs, p.loss));
            })
            .with_context(|| format!("training {}", cfg.out.display()))?;
            bar.finish_and_clear();
            if let Some((m, e)) = s.last_eval {
                println!(
                    "trained {} (seed {}): val top-1 {:.2}% (EMA {})",
                    cfg.model,
                    cfg.seed,
                    m.top1,
                    e.map_or("–".into(), |e| format!("{:.2}%", e.top1))
                );
            }
        }
    }

    // 2. Taps of every trained model and of each model at random init, on both splits.
    let eval = EvalTransform { resize: a.size, crop: a.size, filter: Filter::Bilinear };
    let cache_root = a.out.join("cache");
    let mut sets: Vec<(String, Option<PathBuf>, u64, String)> = trained
        .iter()
        .map(|(m, s, dir)| (m.clone(), Some(dir.join("model.safetensors")), *s, format!("{}-s{s}", tag_of(m))))
        .collect();
    sets.extend(models.iter().map(|m| (m.clone(), None, 0, format!("{}-init", tag_of(m)))));
    let probe_train = match a.probe_train_per_class {
        Some(k) => Arc::new(per_class_subset(train_ds, k)),
        None => train_ds.clone(),
    };
    let probes_path = a.out.join("probes.parquet");
    let cka_path = a.out.join("cka.parquet");
    let attention_path = a.out.join("attention.parquet");
    let attention_size = a.attention_size.unwrap_or(2 * a.size);
    let attention_cfg = |model: &str, weights: WeightsRef| AttentionConfig {
        model: model.to_string(),
        weights,
        blocks: Vec::new(),
        batch: 32,
        limit: Some(a.attention_limit),
        eval: EvalTransform { resize: attention_size, crop: attention_size, filter: Filter::Bilinear },
        norm: Normalize::default(),
        workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    for p in [
        &probes_path,
        &cka_path,
        &attention_path,
        &AttentionMaps::maps_path(&a.out),
        &AttentionMaps::images_path(&a.out),
    ] {
        if p.exists() {
            std::fs::remove_file(p).with_context(|| format!("replacing {}", p.display()))?;
        }
    }
    let mut caches = Vec::new();
    for (model, weights, seed, tag) in &sets {
        let net: MobileVit<B> =
            crate::probe::load_model(model, weights.as_deref(), *seed, classes, dev, exvit_zoo::NonFinite::Refuse)?;
        let taps: Vec<TapSpec> =
            net.tap_names().iter().map(|t| TapSpec::parse(t, Pooling::Gap)).collect::<Result<_, _>>()?;
        let cfg = ExtractConfig {
            model: model.clone(),
            weights: weights.clone(),
            init_seed: *seed,
            taps,
            batch: 64,
            shard_rows: 1024,
            dtype: Dtype::F32,
            eval,
            norm: Normalize::default(),
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        let mut pair = Vec::new();
        for (split, ds) in [("train", &probe_train), ("val", val_ds)] {
            let dir = cache_root.join(tag).join(split);
            extract(&net, ds.clone(), &dir, &cfg, dev, &stop, |_, _| {})
                .with_context(|| format!("extracting {}", dir.display()))?;
            pair.push(Cache::open(&dir)?);
        }
        // 3. Probes: every tap, and the ExMobileViT-style concat of early taps and the head.
        let (ct, cv) = (&pair[0], &pair[1]);
        let mut sets: Vec<Vec<String>> = ct.manifest.taps.iter().map(|t| vec![t.spec.column()]).collect();
        sets.push(["stages.2:gap", "stages.3:gap", "final_conv:gap"].map(String::from).to_vec());
        let rows = probe_caches::<B>(ct, cv, &sets, &ProbeConfig::default(), dev, |_| {})?;
        write_probes(&probes_path, &rows)?;
        println!("probed {tag}: {} taps, best {}", rows.len(), best(&rows));
        // 3b. Attention: per-head statistics over the validation split; maps of 4 images for
        // the seed-0 weights.
        let acfg = attention_cfg(model, ct.manifest.weights_ref());
        let att = attention_stats(&net, val_ds.clone(), &acfg, dev, &stop, |_, _| {})
            .with_context(|| format!("attention of {tag}"))?;
        write_attention(&attention_path, &att)?;
        if *seed == 0 {
            let maps = attention_maps(&net, val_ds.clone(), &balanced_subset(val_ds, Some(4)), &[], &acfg, dev)
                .with_context(|| format!("attention maps of {tag}"))?;
            write_attention_maps(&a.out, &maps)?;
        }
        caches.push((tag.clone(), model.clone(), weights.clone(), *seed, pair.pop().expect("val cache")));
    }

    // 4. CKA on the validation images: within each trained seed-0 model, and base vs each other model.
    let trained0: Vec<&(String, String, Option<PathBuf>, u64, Cache)> =
        caches.iter().filter(|c| c.2.is_some() && c.3 == 0).collect();
    let mut pairs: Vec<(usize, usize)> = (0..trained0.len()).map(|i| (i, i)).collect();
    pairs.extend((1..trained0.len()).map(|j| (0, j)));
    for (i, j) in pairs {
        let (ca, cb) = (&trained0[i].4, &trained0[j].4);
        let cols = |c: &Cache| -> Vec<String> { c.manifest.taps.iter().map(|t| t.spec.column()).collect() };
        let rows = cka_caches::<B>(ca, Some(cb), &cols(ca), &cols(cb), None, dev)?;
        write_cka(&cka_path, &rows)?;
    }

    Ok(())
}

/// The first `k` samples of each class of `ds`, in dataset order.
fn per_class_subset(ds: &Dataset, k: usize) -> Dataset {
    let mut seen = vec![0usize; ds.classes.len()];
    let samples = ds
        .samples
        .iter()
        .filter(|s| {
            seen[s.label] += 1;
            seen[s.label] <= k
        })
        .cloned()
        .collect();
    Dataset { samples, ..ds.clone() }
}

/// Trains the `pending` runs in up to `a.jobs` child processes at once (`exvit train`, one
/// compute thread each), each logging to `<run>.log` beside its run directory; fails naming the
/// first run that failed and its log, after the others have finished.
fn train_in_children(a: &DemoArgs, pending: &[(RunConfig, bool)]) -> Result<()> {
    use std::process::{Child, Command, Stdio};
    let exe = std::env::current_exe().context("locating the exvit binary")?;
    let bar = ProgressBar::new(pending.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("training [{bar:25}] {pos}/{len} runs, {elapsed} {msg}").expect("template"),
    );
    let mut queue = pending.iter();
    let mut running: Vec<(Child, &RunConfig, PathBuf)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    loop {
        while running.len() < a.jobs {
            let Some((cfg, resume)) = queue.next() else { break };
            std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
            let log = cfg.out.with_extension("log");
            let mut cmd = Command::new(&exe);
            cmd.arg("train").arg("--device").arg(&a.device);
            if *resume {
                cmd.arg("--resume").arg(&cfg.out);
            } else {
                let toml_path = cfg.out.with_extension("toml");
                let text = toml::to_string_pretty(cfg).context("writing a run config")?;
                std::fs::write(&toml_path, text).with_context(|| format!("writing {}", toml_path.display()))?;
                cmd.arg("--config").arg(&toml_path);
            }
            let f = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let child = cmd
                .arg("--workers")
                .arg("1")
                .env("RAYON_NUM_THREADS", "1")
                .stdout(Stdio::from(f.try_clone()?))
                .stderr(Stdio::from(f))
                .spawn()
                .with_context(|| format!("starting {} train for {}", exe.display(), cfg.out.display()))?;
            running.push((child, cfg, log));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].0.try_wait()? {
                let (_, cfg, log) = running.swap_remove(i);
                bar.inc(1);
                if status.success() {
                    let last = std::fs::read_to_string(&log).unwrap_or_default();
                    let line = last.lines().rev().find(|l| l.contains("top-1")).unwrap_or("").trim().to_string();
                    bar.suspend(|| println!("trained {} (seed {}): {line}", cfg.model, cfg.seed));
                } else {
                    failed.push(format!("{} ({status}; log {})", cfg.out.display(), log.display()));
                }
            } else {
                i += 1;
            }
        }
    }
    bar.finish_and_clear();
    anyhow::ensure!(failed.is_empty(), "training failed: {}", failed.join(", "));
    Ok(())
}

/// A folder-safe name for a model: the registry name, or a TOML file's stem.
fn tag_of(model: &str) -> String {
    let p = Path::new(model);
    if model.ends_with(".toml") {
        p.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    } else {
        model.replace(['/', '\\'], "_")
    }
}

fn best(rows: &[ProbeRow]) -> String {
    rows.iter().max_by(|a, b| a.top1.total_cmp(&b.top1)).map_or("–".into(), |r| format!("{} {:.1}%", r.tap, r.top1))
}
