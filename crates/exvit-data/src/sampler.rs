//! Sampling: which samples, in which order, in which batches, at which resolution.
//!
//! Everything is a pure function of `(seed, epoch)` (and rank/world size), computed up front
//! as a list of batches: the same whatever the number of threads, and a resumed run can skip
//! to any batch of any epoch.
//!
//! - **Shuffle**: a Fisher–Yates permutation keyed by `(seed, epoch)`.
//! - **Sharding** (data parallel): rank `r` of `W` takes positions `r, r + W, r + 2W, …` of
//!   the epoch's order, so across ranks every sample appears exactly once; each rank's list is
//!   then padded, by wrapping around to its own start, to the common length
//!   `L = B · ⌈⌈n / W⌉ / B⌉` (B the batch size), so that every rank runs the same number of
//!   steps. A rank repeats `L − n_r` samples: at most `B − 1` for the ranks that hold
//!   `⌈n / W⌉` samples, at most `B` for the others (one more, only when `W` does not divide
//!   `n`). PyTorch's `DistributedSampler` pads the same way in spirit (it repeats the start of
//!   the order) but only to a multiple of `W`.
//! - **Multi-scale** (ml-cvnets' variable-batch sampler): each batch draws a resolution
//!   uniformly from a set (by default {160, 192, 256, 288, 320}) and takes the batch size that
//!   goes with it: v0.1 `max(base, round(base · 256² / s²))`, made divisible by the number of
//!   GPUs and even, as cvnets does; v0.2 `max(1, round(base · 256² / s²))`, constant pixels per
//!   batch. The resolution draw uses `(seed, epoch)` only, so every rank picks the same one. The
//!   last partial batch wraps around to the start of the rank's list.
//! - **Gradient accumulation**: a *step* holds `accum` micro-batches at one resolution.

use crate::rng::Rng;

/// One batch: sample indices (into the dataset) at one square resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// Dataset indices.
    pub indices: Vec<usize>,
    /// Output side in pixels.
    pub size: usize,
}

/// An optimiser step: `accum` micro-batches at one resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// The micro-batches, all at the same `size`.
    pub micro: Vec<BatchPlan>,
}

/// The epoch's order: a seeded permutation of `0..n` (or the identity when not shuffling).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if shuffle {
        Rng::keyed(seed, &[0x5348_5546, epoch]).shuffle(&mut v);
    }
    v
}

/// Rank `rank`'s share of `order` (positions `rank, rank + world, …`), unpadded.
pub fn shard(order: &[usize], rank: usize, world: usize) -> Vec<usize> {
    assert!(world > 0 && rank < world, "rank {rank} of world size {world}");
    order.iter().skip(rank).step_by(world).copied().collect()
}

/// Wraps `v` around to length `len` (repeating from its start).
fn wrap_to(v: &[usize], len: usize) -> Vec<usize> {
    if v.is_empty() {
        return Vec::new();
    }
    (0..len).map(|i| v[i % v.len()]).collect()
}

/// Where this process sits in data-parallel training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// This replica.
    pub rank: usize,
    /// Number of replicas.
    pub world: usize,
}

impl Default for Replica {
    fn default() -> Self {
        Replica { rank: 0, world: 1 }
    }
}

/// Fixed-resolution batches: the usual sampler, and evaluation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fixed {
    /// Batch size per replica.
    pub batch: usize,
    /// Resolution.
    pub size: usize,
    /// Shuffle each epoch (training) or keep the dataset's order (evaluation).
    pub shuffle: bool,
    /// Pad each rank's list by wrapping around, so that every batch is full and every rank
    /// runs the same number of batches (training); without it the last batch is partial and
    /// every sample appears exactly once (evaluation).
    pub pad: bool,
}

impl Fixed {
    /// Training: shuffled, padded.
    pub fn train(batch: usize, size: usize) -> Self {
        Fixed { batch, size, shuffle: true, pad: true }
    }

    /// Evaluation: in order, unpadded.
    pub fn eval(batch: usize, size: usize) -> Self {
        Fixed { batch, size, shuffle: false, pad: false }
    }

    /// The epoch's batches for `replica`, sharded and padded as the module docs say.
    pub fn batches(&self, n: usize, seed: u64, epoch: u64, replica: Replica) -> Vec<BatchPlan> {
        assert!(self.batch > 0, "batch size 0");
        let order = epoch_order(n, seed, epoch, self.shuffle);
        let mine = shard(&order, replica.rank, replica.world);
        let list = if self.pad {
            let per_rank = n.div_ceil(replica.world);
            wrap_to(&mine, per_rank.div_ceil(self.batch) * self.batch)
        } else {
            mine
        };
        list.chunks(self.batch).map(|c| BatchPlan { indices: c.to_vec(), size: self.size }).collect()
    }
}

/// ml-cvnets' batch-size rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRule {
    /// v0.1: `max(base, round(base · ref² / s²))`, divisible by the GPUs, even.
    V01,
    /// v0.2: `max(1, round(base · ref² / s²))`: constant pixels per batch.
    V02,
}

/// ml-cvnets' multi-scale variable-batch sampler.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MultiScale {
    /// Resolutions drawn uniformly per batch (per step with accumulation).
    pub sizes: Vec<usize>,
    /// The reference resolution of `base` (256).
    pub ref_size: usize,
    /// Batch size per replica at `ref_size`.
    pub base: usize,
    /// The batch-size rule.
    pub rule: ScaleRule,
    /// Number of GPUs (v0.1 makes batch sizes divisible by it).
    pub n_gpus: usize,
}

/// cvnets' `make_divisible` (from MobileNet): nearest multiple, at least `d`, not below 90%.
fn make_divisible(v: f64, d: usize) -> usize {
    let d = d.max(1) as f64;
    let mut new_v = (d).max(((v + d / 2.0) / d).floor() * d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// Python's `int(round(x, 2))` for positive x.
fn int_round2(x: f64) -> usize {
    ((x * 100.0).round_ties_even() / 100.0) as usize
}

impl MultiScale {
    /// cvnets' defaults: {160, 192, 256, 288, 320}, reference 256.
    pub fn cvnets(base: usize, rule: ScaleRule, n_gpus: usize) -> Self {
        MultiScale { sizes: vec![160, 192, 256, 288, 320], ref_size: 256, base, rule, n_gpus }
    }

    /// The batch size that goes with resolution `s`.
    pub fn batch_for(&self, s: usize) -> usize {
        let n = (self.ref_size * self.ref_size * self.base) as f64 / (s * s) as f64;
        match self.rule {
            ScaleRule::V01 => {
                let b = self.base.max(int_round2(n));
                let mut b = make_divisible(b as f64, self.n_gpus);
                if b > 1 && b % 2 == 1 {
                    b -= 1;
                }
                b
            }
            ScaleRule::V02 => int_round2(n).max(1),
        }
    }

    /// The epoch's steps for `replica`, each of `accum` micro-batches at one drawn
    /// resolution. The rank's shard is consumed in order; the last step wraps around.
    pub fn steps(&self, n: usize, seed: u64, epoch: u64, replica: Replica, accum: usize) -> Vec<StepPlan> {
        assert!(!self.sizes.is_empty(), "multi-scale sampler with no sizes");
        let accum = accum.max(1);
        let order = epoch_order(n, seed, epoch, true);
        let mine = shard(&order, replica.rank, replica.world);
        // Every rank draws the same resolutions: the key leaves the rank out. Ranks may hold
        // one sample fewer than others; they run the same number of steps as rank 0.
        let per_rank = n.div_ceil(replica.world);
        let mut rng = Rng::keyed(seed, &[0x4d53_4341, epoch]);
        let mut steps = Vec::new();
        let mut start = 0;
        if mine.is_empty() {
            return steps;
        }
        while start < per_rank {
            let size = self.sizes[rng.below(self.sizes.len() as u64) as usize];
            let b = self.batch_for(size);
            let mut micro = Vec::with_capacity(accum);
            for _ in 0..accum {
                let indices: Vec<usize> = (start..start + b).map(|p| mine[p % mine.len()]).collect();
                micro.push(BatchPlan { indices, size });
                start += b;
            }
            steps.push(StepPlan { micro });
        }
        steps
    }
}
