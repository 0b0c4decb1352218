//! Runs a frozen model once over a data split and writes the pooled taps to a [`crate::cache`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use exvit_data::loader::{Loader, LoaderConfig};
use exvit_data::sampler::BatchPlan;
use exvit_data::transform::{EvalTransform, Normalize, Transform};
use exvit_data::Dataset;
use exvit_zoo::{MobileVit, TapOutput};
use serde::Serialize;

use crate::cache::{shard_path, write_manifest, write_shard, CachedTap, Dtype, Fnv, Manifest, ShardRows};
use crate::error::ProbeError;
use crate::pool::{Pooling, TapSpec};

/// One tap point of a model at one input resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapInfo {
    /// Its name (timm's module name).
    pub name: String,
    /// `map` (`[C, H, W]`) or `vector` (`[C]`).
    pub kind: &'static str,
    /// Channels.
    pub channels: usize,
    /// Map height (1 for a vector).
    pub height: usize,
    /// Map width (1 for a vector).
    pub width: usize,
    /// Input side / map side (0 for a vector).
    pub stride: usize,
}

/// Every tap point of `model` with its shape at `resolution` (from one forward pass of a
/// blank image, so the shapes are the model's own).
pub fn list_taps<B: Backend>(
    model: &MobileVit<B>,
    model_name: &str,
    resolution: usize,
    device: &B::Device,
) -> Result<Vec<TapInfo>, ProbeError> {
    let names = model.tap_names();
    let x = Tensor::<B, 4>::zeros([1, 3, resolution, resolution], device);
    let outs = model.forward_taps(x, &names, model_name)?;
    Ok(names
        .into_iter()
        .zip(outs)
        .map(|(name, o)| match o {
            TapOutput::Map(m) => {
                let [_, c, h, w] = m.dims();
                TapInfo { name, kind: "map", channels: c, height: h, width: w, stride: resolution / h.max(1) }
            }
            TapOutput::Vector(v) => {
                TapInfo { name, kind: "vector", channels: v.dims()[1], height: 1, width: 1, stride: 0 }
            }
        })
        .collect())
}

/// What to extract and how.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// The model's registry name or `.toml` path (recorded).
    pub model: String,
    /// The weights loaded into the model (recorded and fingerprinted), or `None`.
    pub weights: Option<PathBuf>,
    /// Seed of the model's initialisation (recorded; matters when there are no weights).
    pub init_seed: u64,
    /// The taps and their pooling.
    pub taps: Vec<TapSpec>,
    /// Images per forward pass.
    pub batch: usize,
    /// Rows per shard, a multiple of `batch`.
    pub shard_rows: usize,
    /// Storage precision.
    pub dtype: Dtype,
    /// The eval transform (the pretrained config's, by default).
    pub eval: EvalTransform,
    /// Input normalisation.
    pub norm: Normalize,
    /// Loader threads.
    pub workers: usize,
}

/// What an extraction did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractSummary {
    /// Shards written now.
    pub shards_written: usize,
    /// Shards already there (resumed).
    pub shards_kept: usize,
    /// Images run through the model now.
    pub images: usize,
    /// Images skipped as unreadable now.
    pub bad: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Runs `model` (eval mode: a backend without autodiff) over `ds` and writes the taps of `cfg`
/// to the cache `dir`. A cache made with the same settings is resumed at its first missing
/// shard; one made with other settings is refused. `stop` ends the run after the current batch
/// (the finished shards stay). `progress(images_done, images_total)` is called per batch.
/// The cache is locked while it is written ([`exvit_common::DirLock`]): a second extraction
/// into it, from this process or another, gets [`ProbeError::Lock`] naming the holder.
pub fn extract<B: Backend>(
    model: &MobileVit<B>,
    ds: Arc<Dataset>,
    dir: &Path,
    cfg: &ExtractConfig,
    device: &B::Device,
    stop: &AtomicBool,
    mut progress: impl FnMut(usize, usize),
) -> Result<ExtractSummary, ProbeError> {
    let started = Instant::now();
    if cfg.batch == 0 || cfg.shard_rows == 0 || !cfg.shard_rows.is_multiple_of(cfg.batch) {
        return Err(ProbeError::Config(format!(
            "--shard-rows ({}) must be a positive multiple of --batch ({})",
            cfg.shard_rows, cfg.batch
        )));
    }
    if cfg.taps.is_empty() {
        return Err(ProbeError::Config("no taps to extract".into()));
    }
    let manifest = manifest_for(model, &ds, cfg, device)?;
    // One writer per cache: a second extraction into it is refused, naming this one.
    let _lock = exvit_common::DirLock::acquire(dir, "extracting features")?;
    let mpath = dir.join("manifest.json");
    if mpath.exists() {
        let text = std::fs::read_to_string(&mpath).map_err(ProbeError::io(&mpath))?;
        let old: Manifest = serde_json::from_str(&text).map_err(|e| ProbeError::Table {
            path: mpath.clone(),
            message: format!("not an exvit cache manifest: {e}"),
        })?;
        let diff = old.differences(&manifest);
        if !diff.is_empty() {
            let list = |f: fn(&(String, String, String)) -> String| diff.iter().map(f).collect::<Vec<_>>().join(", ");
            return Err(ProbeError::CacheMismatch {
                path: mpath,
                found: list(|(k, a, _)| format!("{k} = {a}")),
                asked: list(|(k, _, b)| format!("{k} = {b}")),
            });
        }
    } else {
        write_manifest(dir, &manifest)?;
    }
    let total_shards = manifest.shards();
    let n = ds.samples.len();
    let missing: Vec<usize> = (0..total_shards).filter(|&k| !shard_path(dir, k).exists()).collect();
    let kept = total_shards - missing.len();
    if kept > 0 {
        tracing::info!("{}: resuming, {kept} of {total_shards} shards already written", dir.display());
    }
    let mut plans = Vec::new();
    let mut plan_shard = Vec::new();
    for &k in &missing {
        let (lo, hi) = (k * manifest.shard_rows, ((k + 1) * manifest.shard_rows).min(n));
        for c in (lo..hi).collect::<Vec<_>>().chunks(cfg.batch) {
            plans.push(BatchPlan { indices: c.to_vec(), size: cfg.eval.crop });
            plan_shard.push(k);
        }
    }
    let todo: usize = missing.iter().map(|&k| ((k + 1) * manifest.shard_rows).min(n) - k * manifest.shard_rows).sum();
    let mut summary = ExtractSummary { shards_written: 0, shards_kept: kept, images: 0, bad: 0, seconds: 0.0 };
    if plans.is_empty() {
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let mut lc = LoaderConfig::new(Transform::Eval(cfg.eval), 0);
    lc.norm = cfg.norm;
    lc.workers = cfg.workers.max(1);
    let last_plan_of_shard: Vec<bool> =
        (0..plan_shard.len()).map(|i| plan_shard.get(i + 1) != Some(&plan_shard[i])).collect();
    let loader = Loader::start(ds.clone(), plans, 0, 0, lc)?;
    let names: Vec<String> = manifest.taps.iter().map(|t| t.spec.tap.clone()).collect();
    let mut rows = new_rows(&manifest);
    let mut done = 0usize;
    for (i, batch) in loader.enumerate() {
        let batch = batch?;
        assert_eq!(batch.position, i, "the loader yields batches in order");
        let k = plan_shard[i];
        let (b, skipped) = (batch.len(), batch.bad.len());
        summary.bad += skipped;
        rows.bad.extend(batch.bad);
        if b > 0 {
            let s = batch.size;
            let x = Tensor::<B, 4>::from_data(TensorData::new(batch.images, [b, 3, s, s]), device);
            // On rayon's pool, so that the fused kernels' small ops run inline.
            let outs = exvit_layers::fast::on_pool(|| model.forward_taps(x, &names, &cfg.model))?;
            for ((tap, out), dst) in manifest.taps.iter().zip(outs).zip(rows.features.iter_mut()) {
                let pooled = tap.spec.pooling.apply(&tap.spec.tap, out)?;
                let v = pooled.into_data().convert::<f32>();
                dst.extend_from_slice(v.as_slice::<f32>().expect("f32 after convert"));
            }
            rows.indices.extend(batch.indices.iter().map(|&i| i as u32));
            rows.labels.extend(batch.labels.iter().map(|&l| l as u32));
        }
        done += b + skipped;
        summary.images += b;
        progress(done, todo);
        if last_plan_of_shard[i] {
            write_shard(dir, k, &manifest, std::mem::replace(&mut rows, new_rows(&manifest)))?;
            summary.shards_written += 1;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(ProbeError::Interrupted { done: kept + summary.shards_written, total: total_shards });
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn new_rows(m: &Manifest) -> ShardRows {
    ShardRows { features: vec![Vec::new(); m.taps.len()], ..Default::default() }
}

/// The manifest an extraction with `cfg` writes (taps checked against the model).
fn manifest_for<B: Backend>(
    model: &MobileVit<B>,
    ds: &Dataset,
    cfg: &ExtractConfig,
    device: &B::Device,
) -> Result<Manifest, ProbeError> {
    let infos = list_taps(model, &cfg.model, cfg.eval.crop, device)?;
    let mut taps = Vec::new();
    for spec in &cfg.taps {
        // A tap's old name (`stages.S.B.transformer`) is kept in the manifest as given, so an
        // older cache still resumes.
        let canonical = MobileVit::<B>::canonical_tap(&spec.tap);
        let info = infos.iter().find(|i| i.name == canonical).ok_or_else(|| {
            ProbeError::Tap(format!(
                "model `{}` has no tap `{}`; its taps: {}",
                cfg.model,
                spec.tap,
                infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        match (info.kind, spec.pooling) {
            ("vector", Pooling::None) => {}
            ("vector", p) => {
                return Err(ProbeError::Tap(format!("tap `{}` is a vector: pooling `none`, not `{p}`", spec.tap)))
            }
            (_, Pooling::None) => {
                return Err(ProbeError::Tap(format!("tap `{}` is a map: choose gap, avgmax or gridK", spec.tap)))
            }
            _ => {}
        }
        if let Pooling::Grid(k) = spec.pooling {
            if k > info.height.min(info.width) {
                return Err(ProbeError::Tap(format!(
                    "tap `{}` is {}x{} at {}px: a {k}x{k} grid does not fit",
                    spec.tap, info.height, info.width, cfg.eval.crop
                )));
            }
        }
        if taps.iter().any(|t: &CachedTap| t.spec == *spec) {
            return Err(ProbeError::Tap(format!("tap `{spec}` asked for twice")));
        }
        taps.push(CachedTap {
            spec: spec.clone(),
            channels: info.channels,
            dim: spec.pooling.dim(info.channels),
            stride: info.stride,
        });
    }
    let mut h = Fnv::default();
    for s in &ds.samples {
        h.update(s.location.display().as_bytes());
        h.update(&(s.label as u64).to_le_bytes());
    }
    let weights_fnv = cfg.weights.as_deref().map(Fnv::file).transpose()?;
    Ok(Manifest {
        format: 1,
        model: cfg.model.clone(),
        weights: cfg.weights.as_ref().map(|p| p.display().to_string()),
        weights_fnv,
        init_seed: cfg.init_seed,
        data: ds.root.display().to_string(),
        split: ds.split.clone(),
        classes: ds.classes.clone(),
        samples: ds.samples.len(),
        dataset_fnv: h.hex(),
        resolution: cfg.eval.crop,
        resize: cfg.eval.resize,
        interpolation: format!("{:?}", cfg.eval.filter).to_lowercase(),
        mean: cfg.norm.mean,
        std: cfg.norm.std,
        bgr: cfg.norm.bgr,
        taps,
        dtype: cfg.dtype,
        shard_rows: cfg.shard_rows,
    })
}
