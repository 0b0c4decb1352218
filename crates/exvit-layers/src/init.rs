//! Parameter initialisers that burn 0.21 lacks, with PyTorch/timm semantics.

use burn::prelude::*;
use burn::tensor::{Distribution, ElementConversion};
use serde::{Deserialize, Serialize};

/// How a weight tensor starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum WeightInit {
    /// `normal_(0, std)`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// timm's `trunc_normal_(std, a=-2σ, b=2σ)`: a normal truncated at two standard deviations.
    TruncNormal {
        /// Standard deviation of the (untruncated) normal.
        std: f64,
    },
    /// timm byobnet's conv init: `normal_(0, sqrt(2 / fan_out))`, with
    /// `fan_out = k·k·out / groups`.
    KaimingNormalFanOut,
}

impl WeightInit {
    /// A tensor of `shape` drawn from this initialiser. `fan_out` is only used by
    /// [`WeightInit::KaimingNormalFanOut`].
    pub fn sample<B: Backend, const D: usize>(
        &self,
        shape: [usize; D],
        fan_out: usize,
        device: &B::Device,
    ) -> Tensor<B, D> {
        match *self {
            WeightInit::Normal { std } => Tensor::random(shape, Distribution::Normal(0.0, std), device),
            WeightInit::TruncNormal { std } => trunc_normal(shape, std, -2.0 * std, 2.0 * std, device),
            WeightInit::KaimingNormalFanOut => {
                let std = (2.0 / fan_out.max(1) as f64).sqrt();
                Tensor::random(shape, Distribution::Normal(0.0, std), device)
            }
        }
    }
}

/// A normal `N(0, std²)` truncated to `[a, b]`, by resampling the values that fall outside
/// (exact truncated-normal samples; the expected number of rounds is small for `|a|, |b| ≥ σ`).
pub fn trunc_normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    a: f64,
    b: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    assert!(a < b, "trunc_normal: empty interval [{a}, {b}]");
    let mut x = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, std), device);
    for _ in 0..64 {
        let outside = x.clone().lower_elem(a).bool_or(x.clone().greater_elem(b));
        let n_outside: i64 = outside.clone().int().sum().into_scalar().elem();
        if n_outside == 0 {
            return x;
        }
        let fresh = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, std), device);
        x = x.mask_where(outside, fresh);
    }
    // After 64 rounds the leftovers (probability ≤ 0.05^64 each for ±2σ) are clamped.
    x.clamp(a, b)
}
