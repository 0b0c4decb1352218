//! ml-cvnets' learning-rate schedule: a linear warmup by iteration, then a cosine by epoch.

use serde::{Deserialize, Serialize};

/// `lr = warmup_init + it · (max − warmup_init) / W` while `it < W`; after it
/// `lr = min + ½ (max − min)(1 + cos(π · epoch / max_epochs))`, with the integer epoch, as
/// cvnets computes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineWarmup {
    /// Warmup iterations W (3000).
    pub warmup_iters: u64,
    /// LR at iteration 0 (2e-4).
    pub warmup_init_lr: f64,
    /// Peak LR (2e-3).
    pub max_lr: f64,
    /// Final LR (2e-4).
    pub min_lr: f64,
    /// Epochs of the cosine (300).
    pub max_epochs: u64,
}

impl CosineWarmup {
    /// The ImageNet recipe of MobileViT (ml-cvnets): 3000 warmup iterations from 2e-4 to
    /// 2e-3, cosine to 2e-4 over `max_epochs`.
    pub fn cvnets(max_epochs: u64) -> Self {
        CosineWarmup { warmup_iters: 3000, warmup_init_lr: 2e-4, max_lr: 2e-3, min_lr: 2e-4, max_epochs }
    }

    /// The LR at global iteration `iteration` (0-based) during epoch `epoch` (0-based).
    pub fn lr(&self, iteration: u64, epoch: u64) -> f64 {
        if iteration < self.warmup_iters {
            self.warmup_init_lr + iteration as f64 * (self.max_lr - self.warmup_init_lr) / self.warmup_iters as f64
        } else {
            let t = std::f64::consts::PI * epoch as f64 / self.max_epochs.max(1) as f64;
            self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1.0 + t.cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_computed_by_hand() {
        let s = CosineWarmup::cvnets(300);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(close(s.lr(0, 0), 2e-4));
        // 2e-4 + 1500 · 1.8e-3 / 3000 = 2e-4 + 9e-4 = 1.1e-3
        assert!(close(s.lr(1500, 0), 1.1e-3));
        // 2e-4 + 2999 · 6e-7 = 1.9994e-3
        assert!(close(s.lr(2999, 1), 1.9994e-3));
        // After warmup, by epoch: epoch 0 → max; 150 → (max + min) / 2 = 1.1e-3; 300 → min.
        assert!(close(s.lr(3000, 0), 2e-3));
        assert!(close(s.lr(10_000, 150), 1.1e-3));
        assert!(close(s.lr(10_000, 300), 2e-4));
        // epoch 100: 2e-4 + 0.5 · 1.8e-3 · (1 + cos(π/3)) = 2e-4 + 0.9e-3 · 1.5 = 1.55e-3
        assert!(close(s.lr(10_000, 100), 1.55e-3));
        // The cosine uses the integer epoch: constant within an epoch.
        assert_eq!(s.lr(5000, 7), s.lr(9000, 7));
    }
}
