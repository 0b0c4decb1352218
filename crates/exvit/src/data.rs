//! `exvit data`: dataset commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use exvit_data::manifest::write_manifest;
use exvit_data::source::discover;
use exvit_data::{check_dataset, CheckOptions, OnBadImage, DEFAULT_MAX_PIXELS};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BadImage {
    /// Report bad images (log and manifest) and skip them.
    Skip,
    /// Stop at the first bad image.
    Fail,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Decode every image of a dataset once: classes, counts per split, bad files with their
    /// reasons, image sizes; writes a Parquet manifest per split.
    Check {
        /// A split folder (ImageFolder or tar shards), a folder with train/val/test splits, or a
        /// CIFAR binary release folder.
        root: PathBuf,
        /// Folder for the manifests (`<dataset>-<split>.parquet`).
        #[arg(long, default_value = "manifests")]
        manifest_dir: PathBuf,
        /// What to do with an image that cannot be decoded.
        #[arg(long, value_enum, default_value_t = BadImage::Skip)]
        on_bad_image: BadImage,
        /// Pixel cap per image (width × height); larger headers are reported as bad.
        #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
        max_pixels: u64,
    },
    /// Stream a split through the loader (decode, augment, batch) and report img/s, the time
    /// per stage, and resident memory over the epoch; nothing is trained.
    Load(LoadArgs),
    /// Write an ImageFolder split as WebDataset-style tar shards (plus classes.txt).
    Pack {
        /// The ImageFolder split.
        root: PathBuf,
        /// Output folder for `shard-NNNNNN.tar` and `classes.txt`.
        out: PathBuf,
        /// Samples per shard.
        #[arg(long, default_value_t = 10_000)]
        per_shard: usize,
    },
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// A split folder (ImageFolder or tar shards) or a CIFAR binary release folder.
    pub root: PathBuf,
    /// Split of a CIFAR folder (train or test).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Output side (train: RandomResizedCrop size; eval: center crop).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Evaluation preprocessing (resize the shorter side to --resize, center-crop --size)
    /// instead of RandomResizedCrop + flip.
    #[arg(long)]
    pub eval: bool,
    /// Eval: shorter side after the resize (default: size / 0.875).
    #[arg(long)]
    pub resize: Option<usize>,
    /// Interpolation.
    #[arg(long, default_value = "bilinear")]
    pub interpolation: exvit_data::resize::Filter,
    /// Train: decode JPEGs fast (DCT scaling when the crop allows, fast IDCT, plain chroma
    /// upsampling): faster, but not Pillow's pixels.
    #[arg(long)]
    pub fast_decode: bool,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Loader threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Batches that may wait for the consumer.
    #[arg(long, default_value_t = 2)]
    pub prefetch: usize,
    /// Only the first N samples of the epoch's order.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Epochs to stream.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn current_rss_mib() -> f64 {
    crate::bench::proc_status_mib("VmRSS:")
}

fn load(a: LoadArgs) -> Result<()> {
    use exvit_data::loader::{Loader, LoaderConfig};
    use exvit_data::sampler::epoch_order;
    use exvit_data::transform::{EvalTransform, StageTimes, TrainTransform, Transform};
    anyhow::ensure!(a.batch > 0 && a.size > 0, "--batch and --size must be positive");
    let ds = std::sync::Arc::new(
        exvit_data::open_path(&a.root, &a.split).with_context(|| format!("reading {}", a.root.display()))?,
    );
    anyhow::ensure!(!ds.samples.is_empty(), "{}: no samples", a.root.display());
    let transform = if a.eval {
        let resize = a.resize.unwrap_or((a.size as f64 / 0.875).floor() as usize);
        Transform::Eval(EvalTransform { resize, crop: a.size, filter: a.interpolation })
    } else {
        Transform::Train(TrainTransform {
            filter: a.interpolation,
            fast_decode: a.fast_decode,
            ..TrainTransform::new(a.size)
        })
    };
    let mut cfg = LoaderConfig::new(transform, a.seed);
    if let Some(w) = a.workers {
        anyhow::ensure!(w > 0, "--workers must be positive");
        cfg.workers = w;
    }
    cfg.prefetch = a.prefetch;
    let n = a.limit.unwrap_or(ds.samples.len()).min(ds.samples.len());
    let total_batches: u64 = a.epochs * n.div_ceil(a.batch) as u64;
    let bar = ProgressBar::new(total_batches);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches {msg} ({eta})")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix("loading");
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut images, mut bad) = (0usize, 0usize);
    let mut times = StageTimes::default();
    let mut rss = Vec::new();
    let start = std::time::Instant::now();
    let rss_start = current_rss_mib();
    // Throughput after the first epoch (the loader's buffers are allocated, and their pages
    // mapped, during the first batches; a long run never pays that again).
    let mut steady: Option<(std::time::Instant, usize)> = None;
    for epoch in 0..a.epochs {
        if epoch == 1 {
            steady = Some((std::time::Instant::now(), images));
        }
        let order = epoch_order(ds.samples.len(), a.seed, epoch, !a.eval);
        let plan: Vec<exvit_data::sampler::BatchPlan> = order[..n]
            .chunks(a.batch)
            .map(|c| exvit_data::sampler::BatchPlan { indices: c.to_vec(), size: a.size })
            .collect();
        let batches = plan.len();
        let mut loader = Loader::start(ds.clone(), plan, epoch, 0, cfg.clone()).context("starting the loader")?;
        let mut k = 0;
        while let Some(b) = loader.next() {
            let b = b.context("loading a batch")?;
            k += 1;
            images += b.len();
            bad += b.bad.len();
            times += b.times;
            bar.inc(1);
            bar.set_message(format!("{:.0} img/s", images as f64 / start.elapsed().as_secs_f64()));
            if k % batches.div_ceil(10).max(1) == 0 || k == batches {
                rss.push(current_rss_mib());
            }
            loader.recycle(b.images);
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let per_img = |ns: u64| ns as f64 / 1e3 / images.max(1) as f64;
    let out = serde_json::json!({
        "root": a.root.display().to_string(),
        "images": images,
        "bad": bad,
        "seconds": secs,
        "img_per_s": images as f64 / secs,
        "workers": cfg.workers,
        "img_per_s_per_worker": images as f64 / secs / cfg.workers as f64,
        "img_per_s_steady": steady.map(|(t, n0)| (images - n0) as f64 / t.elapsed().as_secs_f64()),
        "size": a.size,
        "mode": if a.eval { "eval" } else { "train" },
        "fast_decode": a.fast_decode,
        "us_per_image": {
            "read_decode": per_img(times.decode),
            "crop": per_img(times.crop),
            "resize": per_img(times.resize),
            "to_tensor": per_img(times.to_tensor),
        },
        "rss_mib_start": rss_start,
        "rss_mib_by_tenth": rss,
        "peak_rss_mib": crate::bench::peak_rss_mib(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Load(a) => load(a),
        DataCommand::Pack { root, out, per_shard } => {
            anyhow::ensure!(per_shard > 0, "--per-shard must be positive");
            let ds = exvit_data::open_split(&root).with_context(|| format!("reading {}", root.display()))?;
            let shards = exvit_data::pack::pack_shards(&ds, &out, per_shard)
                .with_context(|| format!("packing {} into {}", root.display(), out.display()))?;
            println!(
                "packed {} samples of {} classes into {} shards in {}",
                ds.samples.len(),
                ds.classes.len(),
                shards.len(),
                out.display()
            );
            Ok(())
        }
        DataCommand::Check { root, manifest_dir, on_bad_image, max_pixels } => {
            let on_bad_image = match on_bad_image {
                BadImage::Skip => OnBadImage::Skip,
                BadImage::Fail => OnBadImage::Fail,
            };
            let splits = discover(&root).with_context(|| format!("reading dataset {}", root.display()))?;
            std::fs::create_dir_all(&manifest_dir)
                .with_context(|| format!("cannot create manifest folder {}", manifest_dir.display()))?;
            // The dataset's name: the root's, or its parent's when the root is itself a split.
            let canon = root.canonicalize().with_context(|| format!("reading dataset {}", root.display()))?;
            let is_split =
                splits.len() == 1 && canon.file_name().is_some_and(|n| n.to_string_lossy() == splits[0].split);
            let named = if is_split { canon.parent().unwrap_or(&canon) } else { &canon };
            let dataset = named.file_name().map_or("dataset".to_string(), |n| n.to_string_lossy().into_owned());
            for ds in splits {
                let bar = ProgressBar::new(ds.samples.len() as u64).with_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                        .expect("progress template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("check {}", ds.split));
                let report = check_dataset(&ds, CheckOptions { max_pixels, on_bad_image }, &|n| {
                    if n % 256 == 0 {
                        bar.set_position(n as u64)
                    }
                })
                .with_context(|| format!("checking {}", ds.root.display()))?;
                bar.finish_and_clear();
                let counts = report.counts();
                println!(
                    "split {}: {} images, {} classes ({})",
                    report.split,
                    report.records.len(),
                    report.classes.len(),
                    ds.root.display()
                );
                for (name, n) in report.classes.iter().zip(&counts) {
                    println!("  {name:<24} {n}");
                }
                let bad = report.bad();
                println!("  bad images: {}", bad.len());
                for r in &bad {
                    if let exvit_data::Status::Bad(why) = &r.status {
                        println!("    {}: {why}", r.path);
                    }
                }
                let sizes = report.sizes();
                let shown: Vec<String> = sizes.iter().take(5).map(|((w, h), n)| format!("{w}x{h} ({n})")).collect();
                println!("  image sizes: {} distinct; most common: {}", sizes.len(), shown.join(", "));
                let name = format!("{dataset}-{}.parquet", report.split);
                let path = manifest_dir.join(name);
                write_manifest(&report.records, &path).with_context(|| format!("writing {}", path.display()))?;
                println!("  manifest: {}", path.display());
            }
            Ok(())
        }
    }
}
