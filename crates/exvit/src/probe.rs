//! `exvit probe taps | extract | fit | cka | attention`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::Backend;
use burn_flex::{Flex, FlexDevice};
use exvit_probe::{
    attention_maps, attention_stats, balanced_subset, cka_caches, extract, list_taps, probe_caches, run_probe,
    write_attention, write_attention_maps, write_cka, write_probes, AttentionConfig, Cache, Dtype, ExtractConfig,
    Pooling, ProbeConfig, ProbeError, TapSpec, WeightsRef,
};
use exvit_zoo::{resolve_model, MobileVit, ModelWeights};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::open_split;
use crate::device::parse_device;

#[derive(clap::Subcommand, Debug)]
pub enum ProbeCommand {
    /// List a model's tap points with channels, map size and stride.
    Taps(TapsArgs),
    /// Run a frozen model over a split and cache its taps (resumable).
    Extract(ExtractArgs),
    /// Fit a linear probe per tap (and per combination) on cached features.
    Fit(FitArgs),
    /// Linear CKA between the taps of one cache, or between two caches.
    Cka(CkaArgs),
    /// Per-head mean attention distance, entropy and self-attention of every transformer
    /// layer over a split (appended to attention.parquet), and attention maps of a few images.
    Attention(AttentionArgs),
    /// Time one probe on synthetic features (default: 50,000 x 640, 1000 classes).
    Bench(ProbeBenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct ProbeBenchArgs {
    /// Training rows.
    #[arg(long, default_value_t = 50_000)]
    n: usize,
    /// Evaluation rows.
    #[arg(long, default_value_t = 10_000)]
    n_eval: usize,
    /// Feature width.
    #[arg(long, default_value_t = 640)]
    dim: usize,
    /// Classes.
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Weight decays (comma-separated); several: chosen on 10% held out, then refit.
    #[arg(long, default_value = "1e-4")]
    wd: String,
    /// L-BFGS iterations per fit.
    #[arg(long, default_value_t = 100)]
    max_iter: usize,
    /// Std of the class means per feature (noise is 1): how hard the problem is.
    #[arg(long, default_value_t = 0.06)]
    separation: f32,
    /// Also write the features and labels here (safetensors), for benches/probe-vs-sklearn.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(clap::Args, Debug)]
pub struct TapsArgs {
    /// Zoo name or model TOML.
    #[arg(long)]
    model: String,
    /// Input side (default: the model's pretrained config).
    #[arg(long)]
    resolution: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The frozen model a command runs over data: a zoo name or TOML, with weights or at a seeded
/// random init (`exvit probe extract`, `exvit probe attention`).
#[derive(clap::Args, Debug)]
pub struct FrozenModel {
    /// Zoo name or model TOML.
    #[arg(long)]
    model: String,
    /// Weights (safetensors, timm keys). Without: the model at its seeded random init.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The model's pretrained weights (timm's, on the Hugging Face hub): from the hub cache
    /// timm uses, downloaded into it when missing; recorded as that file's path.
    #[arg(long, conflicts_with = "weights")]
    pretrained: bool,
    /// Load weights even when they hold NaN or Inf (refused by default, naming the tensors).
    #[arg(long)]
    allow_nonfinite: bool,
    /// Seed of the random init (without --weights).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl FrozenModel {
    /// `--pretrained` → `--weights` of the cached hub file (done once, before anything records
    /// the weights).
    fn resolve_pretrained(&mut self) -> Result<()> {
        self.weights = crate::common::weights_or_pretrained(&self.model, self.weights.take(), self.pretrained)?;
        self.pretrained = false;
        Ok(())
    }

    /// The model on `dev` (`classes` when at random init; a file's own otherwise).
    fn load<B: Backend>(&self, classes: usize, dev: &B::Device) -> Result<MobileVit<B>> {
        let nonfinite = exvit_zoo::NonFinite::allow_if(self.allow_nonfinite);
        load_model(&self.model, self.weights.as_deref(), self.seed, classes, dev, nonfinite)
    }
}

#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    net: FrozenModel,
    /// Dataset folder (a split folder, a folder with splits, or a CIFAR binary folder).
    #[arg(long)]
    data: PathBuf,
    /// Split inside --data.
    #[arg(long, default_value = "val")]
    split: String,
    /// Taps, comma-separated, each `name` or `name:pooling`; `all` for every tap.
    #[arg(long, default_value = "all")]
    taps: String,
    /// Pooling of taps given without one: gap, avgmax, gridK.
    #[arg(long, default_value = "gap")]
    pool: String,
    /// The cache folder (created; an existing one with the same settings is resumed).
    #[arg(long)]
    out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Rows per shard (a multiple of --batch).
    #[arg(long, default_value_t = 4096)]
    shard_rows: usize,
    /// Storage: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[command(flatten)]
    pre: crate::common::Preprocessing,
    /// Loader threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    net: FrozenModel,
    /// Dataset folder (a split folder, a folder with splits, or a CIFAR binary folder).
    #[arg(long)]
    data: PathBuf,
    /// Split inside --data.
    #[arg(long, default_value = "val")]
    split: String,
    /// The statistics table (rows are appended); the maps go beside it
    /// (attention_maps.parquet, attention_images.parquet).
    #[arg(long, default_value = "attention.parquet")]
    out: PathBuf,
    /// MobileViT blocks to analyse, comma-separated (`stages.2.1,…`); all when absent.
    #[arg(long)]
    blocks: Option<String>,
    /// Analyse at most this many images (balanced over the classes); all when absent.
    #[arg(long)]
    limit: Option<usize>,
    /// Attention maps of this many images (the first image of each of the first classes),
    /// layer 0 of the first MobileViT block of each stage; 0: none.
    #[arg(long, default_value_t = 4)]
    maps: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[command(flatten)]
    pre: crate::common::Preprocessing,
    /// Loader threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(clap::Args, Debug)]
pub struct FitArgs {
    /// Cache of the training split.
    #[arg(long)]
    train: PathBuf,
    /// Cache of the evaluation split (same model, weights and taps).
    #[arg(long)]
    eval: PathBuf,
    /// Columns to probe one by one, comma-separated (`tap` or `tap:pooling`); `all`: every one.
    #[arg(long, default_value = "all")]
    taps: String,
    /// A combination probed as one concatenated feature, `a+b+c` (repeatable): an
    /// ExMobileViT-style head on frozen features.
    #[arg(long)]
    combine: Vec<String>,
    /// Weight decays to choose from on the held-out part of train (comma-separated).
    #[arg(long, default_value = "1e-5,1e-4,1e-3,1e-2")]
    wd: String,
    /// Share of train held out to choose the weight decay.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// L-BFGS iterations per fit.
    #[arg(long, default_value_t = 200)]
    max_iter: usize,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The table the rows are appended to.
    #[arg(long, default_value = "probes.parquet")]
    out: PathBuf,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(clap::Args, Debug)]
pub struct CkaArgs {
    /// A cache.
    #[arg(long)]
    cache: PathBuf,
    /// A second cache over the same images: CKA between every column of each (for example the
    /// same tap of two models). Without it: every pair of columns of --cache.
    #[arg(long)]
    other: Option<PathBuf>,
    /// Columns (comma-separated) or `all`.
    #[arg(long, default_value = "all")]
    taps: String,
    /// Use only the first N images (CKA needs no more than a few thousand).
    #[arg(long)]
    max_images: Option<usize>,
    /// The table the rows are appended to.
    #[arg(long, default_value = "cka.parquet")]
    out: PathBuf,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(cmd: ProbeCommand) -> Result<()> {
    match cmd {
        ProbeCommand::Taps(a) => taps(a),
        ProbeCommand::Extract(a) => extract_cmd(a),
        ProbeCommand::Fit(a) => fit(a),
        ProbeCommand::Cka(a) => cka(a),
        ProbeCommand::Attention(a) => attention_cmd(a),
        ProbeCommand::Bench(a) => bench(a),
    }
}

fn taps(a: TapsArgs) -> Result<()> {
    let mcfg = resolve_model(&a.model, 1000).with_context(|| format!("model `{}`", a.model))?;
    let r = a.resolution.unwrap_or(mcfg.pretrained.input_size[1]);
    let model: MobileVit<Flex> = mcfg.init(&FlexDevice);
    let taps = list_taps(&model, &a.model, r, &FlexDevice)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&taps)?);
        return Ok(());
    }
    println!("{} at {r}x{r}:", a.model);
    println!("{:<28} {:>6} {:>9} {:>7}", "tap", "chans", "map", "stride");
    for t in taps {
        let map = if t.kind == "map" { format!("{}x{}", t.height, t.width) } else { "vector".into() };
        let stride = if t.stride > 0 { t.stride.to_string() } else { "-".into() };
        println!("{:<28} {:>6} {:>9} {:>7}", t.name, t.channels, map, stride);
    }
    Ok(())
}

/// The model `name` with `weights` (strict; the class count is the file's) or, without, its
/// initialisation from `seed` for `classes` classes.
pub fn load_model<B: Backend>(
    name: &str,
    weights: Option<&Path>,
    seed: u64,
    classes: usize,
    dev: &B::Device,
    nonfinite: exvit_zoo::NonFinite,
) -> Result<MobileVit<B>> {
    let source = match weights {
        Some(w) => ModelWeights::File(w),
        None => ModelWeights::Init { seed },
    };
    exvit_zoo::load_model_with(name, source, classes, dev, nonfinite).with_context(|| format!("model `{name}`"))
}

fn extract_cmd(mut a: ExtractArgs) -> Result<()> {
    a.net.resolve_pretrained()?;
    let device = parse_device(&a.device)?;
    let (dir, ds) = open_split(&a.data, &a.split)?;
    let mcfg = resolve_model(&a.net.model, 1)?;
    let data = a.pre.resolve(&mcfg.pretrained)?;
    let (eval, norm) = (data.eval_transform(), data.norm);
    let default_pool: Pooling = a.pool.parse()?;
    let dtype = a.dtype.parse::<Dtype>()?;
    let config = |tap_names: Vec<String>| -> Result<ExtractConfig> {
        let names: Vec<String> = if a.taps == "all" {
            tap_names
        } else {
            a.taps.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        Ok(ExtractConfig {
            model: a.net.model.clone(),
            weights: a.net.weights.clone(),
            init_seed: a.net.seed,
            taps: names.iter().map(|n| TapSpec::parse(n, default_pool)).collect::<Result<Vec<_>, _>>()?,
            batch: a.batch,
            shard_rows: a.shard_rows,
            dtype,
            eval,
            norm,
            workers: a.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        })
    };
    let stop = crate::common::stop_on_ctrl_c("stopping after this batch; finished shards are kept")?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} images {per_sec} eta {eta}").expect("template"));
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let result = crate::with_backend!(device, |B, dev| {
        let model: MobileVit<B> = a.net.load(ds.classes.len(), &dev)?;
        let cfg = config(model.tap_names())?;
        tracing::info!(
            "extracting {} taps of {} from {} ({} images) into {}",
            cfg.taps.len(),
            a.net.model,
            dir.display(),
            ds.samples.len(),
            a.out.display()
        );
        extract(&model, ds.clone(), &a.out, &cfg, &dev, &stop, progress)
    });
    bar.finish_and_clear();
    match result {
        Ok(s) => {
            println!(
                "{}: {} shards written, {} kept, {} images in {:.1} s ({:.0} img/s), {} unreadable skipped",
                a.out.display(),
                s.shards_written,
                s.shards_kept,
                s.images,
                s.seconds,
                s.images as f64 / s.seconds.max(1e-9),
                s.bad
            );
            Ok(())
        }
        Err(e @ ProbeError::Interrupted { .. }) => {
            eprintln!("{e}");
            Ok(())
        }
        Err(e) => Err(e).context(format!("extracting into {}", a.out.display())),
    }
}

fn columns(cache: &Cache, taps: &str) -> Vec<String> {
    if taps == "all" {
        cache.manifest.taps.iter().map(|t| t.spec.column()).collect()
    } else {
        taps.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }
}

fn fit(a: FitArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let train = Cache::open(&a.train)?;
    let eval = Cache::open(&a.eval)?;
    let wds =
        a.wd.split(',')
            .map(|s| s.trim().parse::<f64>().with_context(|| format!("--wd: `{s}` is not a number")))
            .collect::<Result<Vec<_>>>()?;
    let cfg = ProbeConfig { wds, holdout: a.holdout, max_iter: a.max_iter, seed: a.seed, ..Default::default() };
    let mut sets: Vec<Vec<String>> = columns(&train, &a.taps).into_iter().map(|c| vec![c]).collect();
    for c in &a.combine {
        sets.push(c.split('+').map(|s| s.trim().to_string()).collect());
    }
    println!("{:<44} {:>6} {:>8} {:>7} {:>7} {:>8}", "tap", "dim", "wd", "top-1", "top-5", "seconds");
    let print = |r: &exvit_probe::ProbeRow| {
        let cols: Vec<String> = r.tap.split('+').zip(r.pooling.split('+')).map(|(t, p)| format!("{t}:{p}")).collect();
        println!(
            "{:<44} {:>6} {:>8.0e} {:>6.2}% {:>6.2}% {:>8.1}",
            cols.join("+"),
            r.dim,
            r.wd,
            r.top1,
            r.top5,
            r.seconds
        );
    };
    let rows = crate::with_backend!(device, |B, dev| probe_caches::<B>(&train, &eval, &sets, &cfg, &dev, print))?;
    write_probes(&a.out, &rows)?;
    println!("{} rows appended to {}", rows.len(), a.out.display());
    Ok(())
}

fn cka(a: CkaArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let ca = Cache::open(&a.cache)?;
    let cb = match &a.other {
        Some(p) => Some(Cache::open(p)?),
        None => None,
    };
    let cols_a = columns(&ca, &a.taps);
    let cols_b = columns(cb.as_ref().unwrap_or(&ca), &a.taps);
    let rows =
        crate::with_backend!(device, |B, dev| cka_caches::<B>(&ca, cb.as_ref(), &cols_a, &cols_b, a.max_images, &dev))?;
    let first = rows.first();
    println!(
        "linear CKA, {} images: rows {} ({}), columns {} ({})",
        first.map_or(0, |r| r.n),
        ca.manifest.model,
        ca.manifest.weights_ref(),
        first.map_or("", |r| r.model_b.as_str()),
        first.map_or(String::new(), |r| r.weights_b.to_string())
    );
    for (i, col) in cols_a.iter().enumerate() {
        let line: String =
            rows[i * cols_b.len()..(i + 1) * cols_b.len()].iter().map(|r| format!(" {:5.2}", r.cka)).collect();
        println!("{col:<32}{line}");
    }
    write_cka(&a.out, &rows)?;
    println!("{} rows appended to {}", rows.len(), a.out.display());
    Ok(())
}

/// Gaussian class clusters: class means N(0, sep²) per feature, unit noise.
fn synthetic(n: usize, dim: usize, classes: usize, sep: f32, seed: u64) -> (exvit_probe::Matrix, Vec<u32>) {
    let mut r = exvit_data::rng::Rng::keyed(seed, &[0x4245_4e43]);
    let mut normal = move || {
        let (u, v) = (r.unit().max(1e-12), r.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let mut m = exvit_data::rng::Rng::keyed(7, &[0x4d45_414e]);
    let means: Vec<f32> = (0..classes * dim)
        .map(|_| {
            let (u, v) = (m.unit().max(1e-12), m.unit());
            sep * ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let mut data = Vec::with_capacity(n * dim);
    for &y in &labels {
        let mu = &means[y as usize * dim..(y as usize + 1) * dim];
        data.extend(mu.iter().map(|&c| c + normal()));
    }
    (exvit_probe::Matrix::new(n, dim, data), labels)
}

fn bench(a: ProbeBenchArgs) -> Result<()> {
    let wds =
        a.wd.split(',')
            .map(|s| s.trim().parse::<f64>().with_context(|| format!("--wd: `{s}` is not a number")))
            .collect::<Result<Vec<_>>>()?;
    let t0 = std::time::Instant::now();
    let (xt, yt) = synthetic(a.n, a.dim, a.classes, a.separation, 1);
    let (xe, ye) = synthetic(a.n_eval, a.dim, a.classes, a.separation, 2);
    let gen = t0.elapsed().as_secs_f64();
    if let Some(path) = &a.save {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let ints = |v: &[u32]| v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect::<Vec<u8>>();
        let (bt, be, lt, le) = (bytes(&xt.data), bytes(&xe.data), ints(&yt), ints(&ye));
        use safetensors::tensor::TensorView;
        let views = vec![
            ("x_train", TensorView::new(safetensors::Dtype::F32, vec![a.n, a.dim], &bt)?),
            ("x_eval", TensorView::new(safetensors::Dtype::F32, vec![a.n_eval, a.dim], &be)?),
            ("y_train", TensorView::new(safetensors::Dtype::I64, vec![a.n], &lt)?),
            ("y_eval", TensorView::new(safetensors::Dtype::I64, vec![a.n_eval], &le)?),
        ];
        safetensors::serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let cfg = ProbeConfig { wds, max_iter: a.max_iter, ..Default::default() };
    let device = parse_device(&a.device)?;
    let r = crate::with_backend!(device, |B, dev| run_probe::<B>(xt, &yt, xe, &ye, a.classes, &cfg, &dev))?;
    let threads = rayon::current_num_threads();
    println!(
        "{}",
        serde_json::json!({
            "n_train": a.n, "n_eval": a.n_eval, "dim": a.dim, "classes": a.classes,
            "wd": r.wd, "selection": r.selection, "max_iter": a.max_iter,
            "seconds": r.seconds, "generate_seconds": gen,
            "top1": r.top1, "top5": r.top5, "train_top1": r.train_top1,
            "threads": threads, "peak_rss_mib": crate::bench::peak_rss_mib(),
        })
    );
    Ok(())
}

fn attention_cmd(mut a: AttentionArgs) -> Result<()> {
    a.net.resolve_pretrained()?;
    let device = parse_device(&a.device)?;
    let (dir, ds) = open_split(&a.data, &a.split)?;
    let mcfg = resolve_model(&a.net.model, 1)?;
    let data = a.pre.resolve(&mcfg.pretrained)?;
    let blocks: Vec<String> = a
        .blocks
        .as_deref()
        .map(|b| b.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let cfg = AttentionConfig {
        model: a.net.model.clone(),
        weights: WeightsRef::of(a.net.weights.as_deref(), a.net.seed),
        blocks,
        batch: a.batch,
        limit: a.limit,
        eval: data.eval_transform(),
        norm: data.norm,
        workers: a.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    };
    let stop = crate::common::stop_on_ctrl_c("stopping after this batch")?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("attention {bar:40} {pos}/{len} images {per_sec} eta {eta}").expect("template"),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let maps_dir = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let started = std::time::Instant::now();
    let (rows, maps) = crate::with_backend!(device, |B, dev| {
        let model: MobileVit<B> = a.net.load(ds.classes.len(), &dev)?;
        tracing::info!(
            "attention of {} over {} ({} images{})",
            a.net.model,
            dir.display(),
            ds.samples.len(),
            a.limit.map_or(String::new(), |l| format!(", at most {l}"))
        );
        let rows = attention_stats(&model, ds.clone(), &cfg, &dev, &stop, progress)
            .with_context(|| format!("attention statistics of {} on {}", a.net.model, dir.display()))?;
        let maps = if a.maps > 0 {
            Some(
                attention_maps(&model, ds.clone(), &balanced_subset(&ds, Some(a.maps)), &[], &cfg, &dev)
                    .with_context(|| format!("attention maps of {}", a.net.model))?,
            )
        } else {
            None
        };
        anyhow::Ok((rows, maps))
    })?;
    bar.finish_and_clear();
    write_attention(&a.out, &rows).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(m) = &maps {
        write_attention_maps(&maps_dir, m).with_context(|| format!("writing the maps in {}", maps_dir.display()))?;
    }
    println!(
        "{}: {} rows (layer x head) over {} images in {:.1} s{}",
        a.out.display(),
        rows.len(),
        rows.first().map_or(0, |r| r.images),
        started.elapsed().as_secs_f64(),
        maps.map_or(String::new(), |m| format!(
            "; {} maps of {} images in {}",
            m.maps.len(),
            m.images.len(),
            maps_dir.display()
        ))
    );
    for r in rows.iter().filter(|r| r.head == 0) {
        println!(
            "  {:<26} grid {:>2}x{:<2} step {:>5.1}px  head 0: distance {:>6.1}px entropy {:.3} self {:.3}",
            r.tap(),
            r.grid_h,
            r.grid_w,
            r.step_h,
            r.distance,
            r.entropy,
            r.self_attention
        );
    }
    Ok(())
}
