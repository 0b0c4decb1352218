//! Attention statistics of a MobileViT transformer layer, streamed over a dataset: per head,
//! the **mean attention distance** (Dosovitskiy et al. 2021, Fig. 7: the attention-weighted
//! distance from a query to the tokens it attends to, in input pixels), the **attention
//! entropy** (nats) and the attention a token pays to itself.
//!
//! MobileViT's geometry: a block unfolds its map (stride `s` relative to the input) into
//! `p x p` patches and runs the transformer among the `n_h x n_w` patches, separately for each
//! of the `p²` positions inside a patch. A token is one patch (at one position within it), so
//! the distance between tokens `(r, c)` and `(r', c')` is `‖(r - r', c - c')‖` patches, and
//! one patch step is `p · s` input pixels. Where timm resizes an odd map up to the next multiple
//! of `p` before the unfold, the patches tile the resized map, which still covers the whole
//! image: a step is then `p · s · H / H'` input pixels (`H'` the resized height; likewise for
//! the width). [`Geometry::of`] computes both.
//!
//! The accumulator reduces each batch of attention probabilities on its backend to a few
//! numbers per head and keeps f64 sums on the host: memory does not grow with the dataset, and
//! no attention map is stored.
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use burn_flex::{Flex, FlexDevice};
//! use exvit_probe::attention::{AttentionStats, Geometry};
//!
//! // A 2 x 2 patch grid, patches 16 input pixels apart; one head attending uniformly.
//! let g = Geometry { grid: (2, 2), step: (16.0, 16.0) };
//! let mut stats = AttentionStats::new(1, g);
//! let uniform = Tensor::<Flex, 4>::full([3, 1, 4, 4], 0.25, &FlexDevice); // [B·P, heads, N, N]
//! stats.update(uniform);
//! let head = &stats.finish()[0];
//! // From a corner, the others are 16, 16 and 16√2 pixels away: (0 + 16 + 16 + 22.63) / 4.
//! assert!((head.distance - 16.0 * (2.0 + 2f64.sqrt()) / 4.0).abs() < 1e-5);
//! assert!((head.entropy - 4f64.ln()).abs() < 1e-6);
//! assert!((head.self_attention - 0.25).abs() < 1e-7);
//! ```

use burn::prelude::*;

/// Where a layer's tokens lie in the input image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// The patch grid, `(n_h, n_w)`: tokens are its cells in row-major order.
    pub grid: (usize, usize),
    /// Input pixels between neighbouring patches, `(vertical, horizontal)`.
    pub step: (f64, f64),
}

impl Geometry {
    /// The geometry of a MobileViT block whose input map is `map` (`(H, W)`) at `stride`
    /// input pixels per map pixel, with `patch`-sized patches: the map is resized up to
    /// multiples of `patch` before the unfold, as timm does.
    pub fn of(map: (usize, usize), stride: usize, patch: usize) -> Geometry {
        let (h, w) = map;
        let (hp, wp) = (h.div_ceil(patch) * patch, w.div_ceil(patch) * patch);
        let step = |n: usize, resized: usize| (patch * stride) as f64 * n as f64 / resized as f64;
        Geometry { grid: (hp / patch, wp / patch), step: (step(h, hp), step(w, wp)) }
    }

    /// Tokens in a layer: `n_h · n_w`.
    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// The `[N, N]` distances between tokens, input pixels, row-major.
    pub fn distances(&self) -> Vec<f32> {
        let n = self.tokens();
        let w = self.grid.1;
        let mut d = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let dr = (i / w) as f64 - (j / w) as f64;
                let dc = (i % w) as f64 - (j % w) as f64;
                d.push(((dr * self.step.0).powi(2) + (dc * self.step.1).powi(2)).sqrt() as f32);
            }
        }
        d
    }
}

/// One head's statistics over every query token of every image seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadStats {
    /// Mean attention distance, input pixels.
    pub distance: f64,
    /// Mean entropy of a query's attention, nats (0: one token; `ln N`: uniform).
    pub entropy: f64,
    /// Mean attention of a token to itself.
    pub self_attention: f64,
    /// Query rows averaged over (images × positions within a patch × tokens).
    pub queries: u64,
}

/// Streaming per-head sums of one transformer layer's attention.
#[derive(Debug, Clone)]
pub struct AttentionStats {
    heads: usize,
    geometry: Geometry,
    distances: Vec<f32>,
    /// Per head: Σ distance, Σ entropy, Σ self-attention over query rows.
    sums: Vec<[f64; 3]>,
    queries: u64,
}

impl AttentionStats {
    /// Empty statistics for a layer of `heads` heads over `geometry`'s tokens.
    pub fn new(heads: usize, geometry: Geometry) -> Self {
        AttentionStats { heads, geometry, distances: geometry.distances(), sums: vec![[0.0; 3]; heads], queries: 0 }
    }

    /// Adds a batch of attention probabilities, `[B·P, heads, N, N]` (each row a query's
    /// softmax over the `N` keys), reduced on its backend.
    ///
    /// # Panics
    /// If the shape disagrees with the heads and the geometry.
    pub fn update<B: Backend>(&mut self, probs: Tensor<B, 4>) {
        let [rows, heads, n, n2] = probs.dims();
        let tokens = self.geometry.tokens();
        assert!(
            heads == self.heads && n == tokens && n2 == tokens,
            "attention probabilities of shape [{rows}, {heads}, {n}, {n2}]; expected [_, {}, {tokens}, {tokens}]",
            self.heads
        );
        let device = probs.device();
        let dist =
            Tensor::<B, 2>::from_data(TensorData::new(self.distances.clone(), [n, n]), &device).reshape([1, 1, n, n]);
        let eye = Tensor::<B, 2>::eye(n, &device).reshape([1, 1, n, n]);
        // Per head, summed over images and queries: each a [heads] vector.
        let per_head = |t: Tensor<B, 4>| -> Vec<f64> {
            let v = t.sum_dim(3).sum_dim(2).sum_dim(0).reshape([heads]).into_data().convert::<f64>();
            v.to_vec::<f64>().expect("f64 after convert")
        };
        // Distance and self-attention are linear in the probabilities: sum over the rows
        // (images x positions) first, then weight one [heads, N, N] block.
        let summed = probs.clone().sum_dim(0);
        let distance = per_head(summed.clone() * dist);
        let own = per_head(summed * eye);
        // 0 · ln 0 = 0: the log of a clamped copy, times the probability itself.
        let entropy = per_head(-(probs.clone() * probs.clamp_min(1e-30).log()));
        for h in 0..heads {
            self.sums[h][0] += distance[h];
            self.sums[h][1] += entropy[h];
            self.sums[h][2] += own[h];
        }
        self.queries += (rows * n) as u64;
    }

    /// The means so far, one per head.
    pub fn finish(&self) -> Vec<HeadStats> {
        let q = self.queries.max(1) as f64;
        self.sums
            .iter()
            .map(|s| HeadStats {
                distance: s[0] / q,
                entropy: s[1] / q,
                self_attention: s[2] / q,
                queries: self.queries,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    fn probs(rows: usize, heads: usize, n: usize, f: impl Fn(usize, usize, usize) -> f32) -> Tensor<Flex, 4> {
        let mut v = Vec::with_capacity(rows * heads * n * n);
        for _ in 0..rows {
            for h in 0..heads {
                for i in 0..n {
                    for j in 0..n {
                        v.push(f(h, i, j));
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [rows, heads, n, n]), &FlexDevice)
    }

    /// The mean over queries of the mean distance to every token, by brute force in f64.
    fn uniform_distance(g: Geometry) -> f64 {
        let (nh, nw) = g.grid;
        let cells: Vec<(f64, f64)> = (0..nh * nw).map(|i| ((i / nw) as f64, (i % nw) as f64)).collect();
        let mut total = 0.0;
        for a in &cells {
            for b in &cells {
                total += (((a.0 - b.0) * g.step.0).powi(2) + ((a.1 - b.1) * g.step.1).powi(2)).sqrt();
            }
        }
        total / (cells.len() * cells.len()) as f64
    }

    #[test]
    fn uniform_identity_and_shift_give_their_known_values() {
        let g = Geometry { grid: (3, 4), step: (8.0, 8.0) };
        let n = g.tokens();
        // Head 0 uniform, head 1 the identity, head 2 a one-hot shift one patch to the right
        // (the last column to the left, also one patch away).
        let p = probs(5, 3, n, |h, i, j| match h {
            0 => 1.0 / n as f32,
            1 => f32::from(i == j),
            _ => {
                let (r, c) = (i / 4, i % 4);
                let target = if c < 3 { r * 4 + c + 1 } else { r * 4 + c - 1 };
                f32::from(j == target)
            }
        });
        let mut s = AttentionStats::new(3, g);
        s.update(p);
        let out = s.finish();
        assert_eq!(out[0].queries, 5 * 12);
        assert!((out[0].distance - uniform_distance(g)).abs() < 1e-4, "{:?}", out[0]);
        assert!((out[0].entropy - (n as f64).ln()).abs() < 1e-5);
        assert!((out[0].self_attention - 1.0 / n as f64).abs() < 1e-6);
        assert_eq!((out[1].distance, out[1].entropy, out[1].self_attention), (0.0, 0.0, 1.0));
        assert!((out[2].distance - 8.0).abs() < 1e-6 && out[2].entropy.abs() < 1e-6 && out[2].self_attention == 0.0);
    }

    #[test]
    fn streamed_batches_equal_one_batch() {
        let g = Geometry { grid: (2, 3), step: (4.0, 6.0) };
        let n = g.tokens();
        // A fixed, uneven attention pattern per (row, head): softmax of a hash.
        let logits: Vec<f32> =
            (0..4 * 2 * n * n).map(|k| (((k as u64).wrapping_mul(2654435761) % 1000) as f32) / 250.0).collect();
        let all = burn::tensor::activation::softmax(
            Tensor::<Flex, 4>::from_data(TensorData::new(logits, [4, 2, n, n]), &FlexDevice),
            3,
        );
        let mut one = AttentionStats::new(2, g);
        one.update(all.clone());
        let mut streamed = AttentionStats::new(2, g);
        streamed.update(all.clone().narrow(0, 0, 1));
        streamed.update(all.narrow(0, 1, 3));
        for (a, b) in one.finish().iter().zip(streamed.finish()) {
            assert_eq!(a.queries, b.queries);
            for (x, y) in [(a.distance, b.distance), (a.entropy, b.entropy), (a.self_attention, b.self_attention)] {
                // f32 sums on the backend, in another grouping: rounding only.
                assert!((x - y).abs() < 1e-6 * x.abs().max(1.0), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn geometry_follows_timms_resize_of_odd_maps() {
        // stages.2 of a 256 px input: a 32 x 32 map at stride 8, patches of 2: 16 x 16 patches
        // 16 px apart.
        assert_eq!(Geometry::of((32, 32), 8, 2), Geometry { grid: (16, 16), step: (16.0, 16.0) });
        // A 7 x 9 map (an odd input) is resized to 8 x 10: 4 x 5 patches covering the same image.
        let g = Geometry::of((7, 9), 32, 2);
        assert_eq!(g.grid, (4, 5));
        assert!((g.step.0 - 64.0 * 7.0 / 8.0).abs() < 1e-12 && (g.step.1 - 64.0 * 9.0 / 10.0).abs() < 1e-12);
        assert_eq!(g.distances()[1], g.step.1 as f32);
    }
}
