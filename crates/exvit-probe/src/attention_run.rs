//! Attention over a dataset split: the per-head statistics of every transformer layer
//! ([`attention_stats`], streamed through [`crate::attention::AttentionStats`]) and the
//! attention maps of a few images ([`attention_maps`]), as exvit-rundir's rows.
//!
//! Both run the frozen model through [`MobileVit::forward_attention`] (burn's generic
//! attention, which returns the probabilities) on batches from exvit-data's loader with the
//! eval transform, and are generic over the backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::prelude::*;
use exvit_data::loader::{Batch, Loader, LoaderConfig};
use exvit_data::sampler::BatchPlan;
use exvit_data::transform::{EvalTransform, Normalize, Transform};
use exvit_data::Dataset;
use exvit_rundir::{AttentionMap, AttentionMaps, AttentionRow, MapImage, WeightsRef};
use exvit_zoo::{BlockAttention, MobileVit};

use crate::attention::{AttentionStats, Geometry};
use crate::error::ProbeError;

/// What to analyse and how.
#[derive(Debug, Clone)]
pub struct AttentionConfig {
    /// The model's registry name or `.toml` path (recorded in the rows).
    pub model: String,
    /// The weights (recorded in the rows).
    pub weights: WeightsRef,
    /// MobileViT blocks (`stages.S.B`) to analyse; every block when empty.
    pub blocks: Vec<String>,
    /// Images per forward pass.
    pub batch: usize,
    /// At most this many images of the split (the first of each class in turn, so a limit
    /// keeps the classes balanced); all when `None`.
    pub limit: Option<usize>,
    /// The eval transform.
    pub eval: EvalTransform,
    /// Input normalisation.
    pub norm: Normalize,
    /// Loader threads.
    pub workers: usize,
}

/// The dataset indices an analysis visits: all, or `limit` of them taken round-robin over the
/// classes (each class's samples in dataset order), sorted.
pub fn balanced_subset(ds: &Dataset, limit: Option<usize>) -> Vec<usize> {
    let n = ds.samples.len();
    let Some(limit) = limit.filter(|&l| l < n) else { return (0..n).collect() };
    let classes = ds.samples.iter().map(|s| s.label + 1).max().unwrap_or(1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, s) in ds.samples.iter().enumerate() {
        by_class[s.label].push(i);
    }
    let mut picked = Vec::with_capacity(limit);
    let mut round = 0;
    while picked.len() < limit {
        for c in &by_class {
            if let Some(&i) = c.get(round) {
                if picked.len() < limit {
                    picked.push(i);
                }
            }
        }
        round += 1;
    }
    picked.sort_unstable();
    picked
}

fn check(cfg: &AttentionConfig) -> Result<(), ProbeError> {
    if cfg.batch == 0 {
        return Err(ProbeError::Config("--batch must be positive".into()));
    }
    if cfg.limit == Some(0) {
        return Err(ProbeError::Config("--limit must be positive".into()));
    }
    Ok(())
}

fn loader(ds: &Arc<Dataset>, indices: &[usize], cfg: &AttentionConfig) -> Result<Loader, ProbeError> {
    let plans = indices.chunks(cfg.batch).map(|c| BatchPlan { indices: c.to_vec(), size: cfg.eval.crop }).collect();
    let mut lc = LoaderConfig::new(Transform::Eval(cfg.eval), 0);
    lc.norm = cfg.norm;
    lc.workers = cfg.workers.max(1);
    Ok(Loader::start(ds.clone(), plans, 0, 0, lc)?)
}

fn input<B: Backend>(batch: &Batch, device: &B::Device) -> Tensor<B, 4> {
    let (b, s) = (batch.len(), batch.size);
    Tensor::from_data(TensorData::new(batch.images.clone(), [b, 3, s, s]), device)
}

fn geometry<B: Backend>(block: &BlockAttention<B>) -> Geometry {
    Geometry::of(block.layers.map, block.stride, block.patch)
}

/// Per-head mean attention distance, entropy and self-attention of every transformer layer of
/// `cfg.blocks`, over `ds` (or `cfg.limit` of its images): one [`AttentionRow`] per block ×
/// layer × head, in forward order. Memory is bounded by one batch (the statistics are running
/// sums). `stop` ends the run after the current batch with [`ProbeError::Interrupted`];
/// `progress(images_done, images_total)` is called per batch. Unreadable images are skipped
/// with a warning.
pub fn attention_stats<B: Backend>(
    model: &MobileVit<B>,
    ds: Arc<Dataset>,
    cfg: &AttentionConfig,
    device: &B::Device,
    stop: &AtomicBool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<AttentionRow>, ProbeError> {
    check(cfg)?;
    let indices = balanced_subset(&ds, cfg.limit);
    let total = indices.len();
    // Per block: its name, geometry and one accumulator per layer (made at the first batch,
    // when the heads and the map are known).
    let mut acc: Vec<(String, Geometry, Vec<AttentionStats>)> = Vec::new();
    let (mut done, mut images) = (0usize, 0u32);
    for batch in loader(&ds, &indices, cfg)? {
        let batch = batch?;
        for (path, why) in &batch.bad {
            tracing::warn!("{path}: skipped ({why})");
        }
        done += batch.len() + batch.bad.len();
        if !batch.is_empty() {
            images += batch.len() as u32;
            let blocks = model.forward_attention(input::<B>(&batch, device), &cfg.blocks, &cfg.model)?;
            if acc.is_empty() {
                for b in &blocks {
                    let g = geometry(b);
                    let stats =
                        b.layers.attention.iter().map(|p| AttentionStats::new(p.dims()[1], g)).collect::<Vec<_>>();
                    acc.push((b.name.clone(), g, stats));
                }
            }
            for (b, (_, _, stats)) in blocks.into_iter().zip(acc.iter_mut()) {
                for (p, s) in b.layers.attention.into_iter().zip(stats.iter_mut()) {
                    s.update(p);
                }
            }
        }
        progress(done, total);
        if stop.load(Ordering::Relaxed) && done < total {
            return Err(ProbeError::Config(format!(
                "interrupted after {done} of {total} images; nothing was written (run it again)"
            )));
        }
    }
    if images == 0 {
        return Err(ProbeError::Config(format!("{}: no readable image in the split", ds.root.display())));
    }
    let mut rows = Vec::new();
    for (block, g, stats) in &acc {
        for (layer, s) in stats.iter().enumerate() {
            for (head, h) in s.finish().into_iter().enumerate() {
                rows.push(AttentionRow {
                    model: cfg.model.clone(),
                    weights: cfg.weights.clone(),
                    block: block.clone(),
                    layer: layer as u32,
                    head: head as u32,
                    size: cfg.eval.crop as u32,
                    grid_h: g.grid.0 as u32,
                    grid_w: g.grid.1 as u32,
                    step_h: g.step.0,
                    step_w: g.step.1,
                    distance: h.distance,
                    entropy: h.entropy,
                    self_attention: h.self_attention,
                    images,
                });
            }
        }
    }
    Ok(rows)
}

/// The first MobileViT block of each stage that has one (`stages.S.B`): where the maps are
/// drawn.
pub fn first_blocks<B: Backend>(model: &MobileVit<B>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for b in model.mobilevit_blocks() {
        let stage = b.split('.').nth(1).unwrap_or_default().to_string();
        if !seen.contains(&stage) {
            seen.push(stage);
            out.push(b);
        }
    }
    out
}

/// The index of the grid's centre cell (row-major; the lower-right of the four central cells
/// of an even grid).
pub fn centre(grid: (usize, usize)) -> usize {
    (grid.0 / 2) * grid.1 + grid.1 / 2
}

/// Per image and head, the attention of layer 0 of each block, averaged over the positions
/// within a patch: `[images, heads, N, N]` as nested vectors from `[B·P, heads, N, N]`.
fn per_image(probs: Tensor<impl Backend, 4>, images: usize) -> (usize, usize, Vec<f32>) {
    let [rows, heads, n, _] = probs.dims();
    let p = rows / images;
    let mean = probs.reshape([images, p, heads, n, n]).mean_dim(1).reshape([images, heads, n, n]);
    (heads, n, mean.into_data().convert::<f32>().to_vec::<f32>().expect("f32 after convert"))
}

/// The attention maps of layer 0 of `blocks` (default: [`first_blocks`]) for the images at
/// `indices` of `ds`: per image and head, the attention from the centre patch (`centre`) and
/// the attention each patch receives averaged over queries (`mean`), each averaged over the
/// positions within a patch; with the images as the model saw them (the eval crop,
/// normalisation undone).
pub fn attention_maps<B: Backend>(
    model: &MobileVit<B>,
    ds: Arc<Dataset>,
    indices: &[usize],
    blocks: &[String],
    cfg: &AttentionConfig,
    device: &B::Device,
) -> Result<AttentionMaps, ProbeError> {
    check(cfg)?;
    let blocks = if blocks.is_empty() { first_blocks(model) } else { blocks.to_vec() };
    let mut out = AttentionMaps::default();
    for batch in loader(&ds, indices, cfg)? {
        let batch = batch?;
        if let Some((path, why)) = batch.bad.first() {
            return Err(ProbeError::Config(format!("{path}: cannot draw its attention map ({why})")));
        }
        let (b, s) = (batch.len(), batch.size);
        let first = out.images.len() as u32;
        for (k, (&idx, &label)) in batch.indices.iter().zip(&batch.labels).enumerate() {
            out.images.push(MapImage {
                image: first + k as u32,
                label: ds.classes.get(label).cloned().unwrap_or_else(|| label.to_string()),
                source: ds.samples[idx].location.display(),
                width: s as u32,
                height: s as u32,
                rgb: rgb_of(&batch.images[k * 3 * s * s..(k + 1) * 3 * s * s], s, &cfg.norm),
            });
        }
        for block in model.forward_attention(input::<B>(&batch, device), &blocks, &cfg.model)? {
            let grid = block.layers.grid;
            let Some(probs) = block.layers.attention.into_iter().next() else { continue };
            let (heads, n, v) = per_image(probs, b);
            let c = centre(grid);
            for k in 0..b {
                for h in 0..heads {
                    let m = &v[(k * heads + h) * n * n..(k * heads + h + 1) * n * n];
                    let row = |q: usize| m[q * n..(q + 1) * n].to_vec();
                    let mean: Vec<f32> = (0..n).map(|j| (0..n).map(|q| m[q * n + j]).sum::<f32>() / n as f32).collect();
                    for (query, values) in [("centre", row(c)), ("mean", mean)] {
                        out.maps.push(AttentionMap {
                            model: cfg.model.clone(),
                            weights: cfg.weights.clone(),
                            image: first + k as u32,
                            block: block.name.clone(),
                            layer: 0,
                            head: h as u32,
                            query: query.into(),
                            grid_h: grid.0 as u32,
                            grid_w: grid.1 as u32,
                            values,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One normalised CHW image back to 8-bit RGB, row-major HWC.
fn rgb_of(chw: &[f32], s: usize, norm: &Normalize) -> Vec<u8> {
    let mut out = vec![0u8; s * s * 3];
    for c in 0..3 {
        // The loader writes B, G, R when `bgr`; the picture is RGB.
        let rgb_c = if norm.bgr { 2 - c } else { c };
        for i in 0..s * s {
            let v = chw[c * s * s + i] * norm.std[rgb_c] + norm.mean[rgb_c];
            out[i * 3 + rgb_c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
