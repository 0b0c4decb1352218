//! The parallel loader: reads, decodes, augments and batches on its own rayon pool, one batch
//! at a time with every worker on it, and hands finished batches to the consumer through a
//! bounded queue (`prefetch` batches). Memory is bounded by `prefetch + 2` batches plus one
//! scratch buffer per worker, whatever the epoch's length.
//!
//! Every sample's augmentation is drawn from [`Rng`] keyed by `(seed, epoch, batch position,
//! slot)`, so batches are identical whatever the number of workers, and a resumed run that
//! restarts at batch `k` of an epoch gets exactly the batches an uninterrupted run got.
//!
//! A sample that cannot be read or decoded is, with [`OnBadImage::Skip`] (the default), left
//! out of its batch (which is then smaller), logged with its path and reason, and listed in
//! [`Batch::bad`]; with [`OnBadImage::Fail`] the loader yields the error and stops.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::check::OnBadImage;
use crate::decode::DEFAULT_MAX_PIXELS;
use crate::rng::Rng;
use crate::sampler::BatchPlan;
use crate::source::{DataError, Dataset, Location};
use crate::transform::{apply, Input, Normalize, Scratch, StageTimes, Transform};

/// How the loader works.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// The transform (train or eval).
    pub transform: Transform,
    /// Output normalisation and channel order.
    pub norm: Normalize,
    /// Worker threads (the loader's own pool).
    pub workers: usize,
    /// Finished batches that may wait for the consumer.
    pub prefetch: usize,
    /// Pixel cap per image.
    pub max_pixels: u64,
    /// What a bad image does.
    pub on_bad_image: OnBadImage,
    /// Seed of the augmentation.
    pub seed: u64,
}

impl LoaderConfig {
    /// Defaults: all cores, prefetch 2, 64 Mpx cap, skip bad images, `[0, 1]` RGB.
    pub fn new(transform: Transform, seed: u64) -> Self {
        LoaderConfig {
            transform,
            norm: Normalize::default(),
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            prefetch: 2,
            max_pixels: DEFAULT_MAX_PIXELS,
            on_bad_image: OnBadImage::Skip,
            seed,
        }
    }
}

/// One batch, ready for a model: `[n, 3, size, size]` f32, CHW per image.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Position of the batch in its plan.
    pub position: usize,
    /// Image side.
    pub size: usize,
    /// `n · 3 · size · size` values.
    pub images: Vec<f32>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Dataset index per image.
    pub indices: Vec<usize>,
    /// Samples left out, with their path and reason.
    pub bad: Vec<(String, String)>,
    /// Time spent per stage over the batch (summed over workers).
    pub times: StageTimes,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when every sample was bad.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

thread_local! {
    /// Per-thread decode and resize buffers. Loader threads live as long as their loader, so
    /// after the first images nothing is allocated (a fresh buffer of a few hundred kB is
    /// mapped page by page, which showed in profiles).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Image buffers handed back by the consumer ([`Loader::recycle`]), so that a steady-state
/// epoch allocates nothing: a fresh buffer of a large batch is mapped page by page on first
/// touch, which cost more than the conversion to floats itself (see docs/data.md).
#[derive(Debug, Default, Clone)]
pub struct BufferPool(Arc<std::sync::Mutex<Vec<Vec<f32>>>>);

impl BufferPool {
    fn take(&self, len: usize) -> Vec<f32> {
        let mut v = self.0.lock().map(|mut p| p.pop()).ok().flatten().unwrap_or_default();
        // Same length (a fixed resolution): no write at all; otherwise only the new tail.
        v.resize(len, 0.0);
        v
    }

    fn give(&self, v: Vec<f32>, max: usize) {
        if let Ok(mut p) = self.0.lock() {
            if p.len() < max {
                p.push(v);
            }
        }
    }
}

/// Loads one batch on the current rayon pool.
pub fn load_batch(
    dataset: &Dataset,
    plan: &BatchPlan,
    position: usize,
    epoch: u64,
    cfg: &LoaderConfig,
) -> Result<Batch, DataError> {
    load_batch_into(dataset, plan, position, epoch, cfg, &BufferPool::default())
}

fn load_batch_into(
    dataset: &Dataset,
    plan: &BatchPlan,
    position: usize,
    epoch: u64,
    cfg: &LoaderConfig,
    pool: &BufferPool,
) -> Result<Batch, DataError> {
    let size = cfg.transform.output_size(plan.size);
    let per = 3 * size * size;
    let mut images = pool.take(plan.indices.len() * per);
    let results: Vec<(Result<(), DataError>, StageTimes)> = images
        .par_chunks_mut(per)
        .zip(plan.indices.par_iter())
        .enumerate()
        .map(|(slot, (out, &index))| {
            SCRATCH.with_borrow_mut(|scratch| {
                let mut times = StageTimes::default();
                let r = (|| {
                    let sample = dataset.samples.get(index).ok_or_else(|| DataError::Layout {
                        path: dataset.root.clone(),
                        message: format!("sample index {index} out of range ({} samples)", dataset.samples.len()),
                    })?;
                    let t = std::time::Instant::now();
                    let mut bytes = std::mem::take(&mut scratch.bytes);
                    let read = dataset.read_bytes_into(sample, &mut bytes);
                    times.decode += t.elapsed().as_nanos() as u64;
                    let r = read.and_then(|()| {
                        let input = match sample.location {
                            Location::Cifar { .. } => Input::Rgb(crate::source::cifar_rgb(&bytes)),
                            _ => Input::Encoded(&bytes),
                        };
                        let mut rng = Rng::keyed(cfg.seed, &[epoch, position as u64, slot as u64]);
                        apply(
                            &cfg.transform,
                            input,
                            size,
                            cfg.max_pixels,
                            &mut rng,
                            &cfg.norm,
                            scratch,
                            out,
                            &mut times,
                        )
                        .map_err(|source| DataError::Decode { path: sample.location.display(), source })
                    });
                    scratch.bytes = bytes;
                    r
                })();
                (r, times)
            })
        })
        .collect();
    let mut batch = Batch {
        position,
        size,
        images: Vec::new(),
        labels: Vec::new(),
        indices: Vec::new(),
        bad: Vec::new(),
        times: StageTimes::default(),
    };
    let mut keep = 0;
    for (slot, ((r, t), &index)) in results.into_iter().zip(&plan.indices).enumerate() {
        batch.times += t;
        match r {
            Ok(()) => {
                if keep != slot {
                    images.copy_within(slot * per..(slot + 1) * per, keep * per);
                }
                keep += 1;
                batch.labels.push(dataset.samples[index].label);
                batch.indices.push(index);
            }
            Err(e) => match cfg.on_bad_image {
                OnBadImage::Fail => return Err(e),
                OnBadImage::Skip => {
                    let path = dataset.samples.get(index).map(|s| s.location.display()).unwrap_or_default();
                    tracing::warn!(%path, reason = %e, "skipping a bad image");
                    batch.bad.push((path, e.to_string()));
                }
            },
        }
    }
    images.truncate(keep * per);
    batch.images = images;
    Ok(batch)
}

/// An epoch's batches, produced in the background; iterate to receive them in order.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    len: usize,
    pool: BufferPool,
    pool_max: usize,
}

impl Loader {
    /// Starts loading `plan` (from [`crate::sampler`]) of `dataset` for `epoch`, from batch
    /// `start` on (to resume within an epoch).
    pub fn start(
        dataset: Arc<Dataset>,
        plan: Vec<BatchPlan>,
        epoch: u64,
        start: usize,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers.max(1))
            .thread_name(|i| format!("exvit-loader-{i}"))
            .build()
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let len = plan.len().saturating_sub(start);
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let pool = BufferPool::default();
        let pool_max = cfg.prefetch.max(1) + 2;
        let producer_pool = pool.clone();
        let handle = std::thread::Builder::new()
            .name("exvit-loader".into())
            .spawn(move || {
                for (position, p) in plan.iter().enumerate().skip(start) {
                    let r = threads.install(|| load_batch_into(&dataset, p, position, epoch, &cfg, &producer_pool));
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return; // the consumer hung up, or the loader must stop
                    }
                }
            })
            .map_err(|e| DataError::Loader(e.to_string()))?;
        Ok(Loader { rx: Some(rx), handle: Some(handle), len, pool, pool_max })
    }

    /// Hands a batch's image buffer back for reuse (optional; a consumer that keeps or
    /// converts the buffer simply does not).
    pub fn recycle(&self, images: Vec<f32>) {
        self.pool.give(images, self.pool_max);
    }

    /// Batches this loader yields (when none fails).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Hang up first so that a producer blocked on a full queue wakes and stops.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
