//! Stochastic depth.

use burn::prelude::*;
use burn::tensor::Distribution;

/// timm's `DropPath`: in training, zeroes whole samples of the residual branch with
/// probability `p` and scales the rest by `1/(1-p)`; the identity in eval or when `p == 0`.
#[derive(Clone, Debug, PartialEq)]
pub struct DropPath {
    /// Drop probability.
    pub prob: f64,
}

impl DropPath {
    /// A drop path with probability `prob` (in `[0, 1)`).
    pub fn new(prob: f64) -> Self {
        assert!((0.0..1.0).contains(&prob), "DropPath: probability must be in [0, 1), got {prob}");
        Self { prob }
    }

    /// Applies the drop path to a residual branch `[N, ..]`.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.prob == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let mask = Tensor::<B, D>::random(shape, Distribution::Bernoulli(keep), &x.device()).div_scalar(keep);
        // In the branch's dtype (a bf16 compute view), not the device's default.
        let mask = crate::precision::in_dtype(mask, x.dtype());
        x.mul(mask)
    }
}
