//! A deterministic, framework-independent initialisation for parity tests.
//!
//! Each tensor's values come from a counter-based SplitMix64 stream keyed by
//! `seed ^ fnv1a64(key)`, so exvit and `tools/parity/make_fixtures.py` produce bit-identical
//! weights from the same seed, and no weights need to be committed. Unlike timm's own init it
//! randomises every BN/LN weight, bias and running statistic and every Linear weight, so a
//! wrong bias, norm or residual cannot hide behind zeros and ones.
//!
//! Rules (u is uniform in [0, 1), computed in f64 and rounded to f32):
//! - `*.num_batches_tracked`: 0;
//! - `*.running_var` and 1-D `*.weight` (norm scales): `0.5 + u`;
//! - `*.running_mean` and 1-D `*.bias`: `(u - 0.5) · 0.4`;
//! - weights of rank ≥ 2: `(2u - 1) · sqrt(3 / fan_in)`, `fan_in = numel / shape[0]`.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::state::update_named;

use exvit_common::rng::GOLDEN;
/// SplitMix64's output function and 64-bit FNV-1a (their one home is exvit-common; re-exported
/// here because the fixture script's NumPy mirror is documented against these names).
pub use exvit_common::{fnv1a64, rng::mix as splitmix_mix};

/// `n` uniforms in [0, 1) for the stream `(seed, key)`: element i is
/// `mix(seed ^ fnv(key) + (i + 1)·golden) >> 11` scaled by 2⁻⁵³.
pub fn uniform_stream(seed: u64, key: &str, n: usize) -> Vec<f64> {
    let base = seed ^ fnv1a64(key);
    (0..n as u64)
        .map(|i| {
            (splitmix_mix(base.wrapping_add((i + 1).wrapping_mul(GOLDEN))) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        })
        .collect()
}

/// The reference values of tensor `key` with `shape` (see the module docs).
pub fn reference_values(seed: u64, key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let last = key.rsplit('.').next().unwrap_or("");
    if last == "num_batches_tracked" {
        return vec![0.0; n];
    }
    let u = uniform_stream(seed, key, n);
    let one_d = shape.len() == 1;
    match last {
        "running_var" => u.iter().map(|u| (0.5 + u) as f32).collect(),
        "weight" if one_d => u.iter().map(|u| (0.5 + u) as f32).collect(),
        "running_mean" => u.iter().map(|u| ((u - 0.5) * 0.4) as f32).collect(),
        "bias" if one_d => u.iter().map(|u| ((u - 0.5) * 0.4) as f32).collect(),
        _ => {
            let fan_in = (n / shape[0].max(1)).max(1);
            let bound = (3.0 / fan_in as f64).sqrt();
            u.iter().map(|u| ((2.0 * u - 1.0) * bound) as f32).collect()
        }
    }
}

/// A reference input: `shape` uniforms in [0, 1) from the stream `(seed, "input")`.
pub fn reference_input(seed: u64, shape: [usize; 4]) -> TensorData {
    let n = shape.iter().product();
    TensorData::new(uniform_stream(seed, "input", n).into_iter().map(|u| u as f32).collect::<Vec<f32>>(), shape)
}

/// Sets every tensor of `module` to its reference values for `seed`.
pub fn reference_init<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    update_named(module, |key, shape| Some(TensorData::new(reference_values(seed, key, shape), shape.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_key() {
        let v = reference_values(7, "x.bn.running_var", &[64]);
        assert!(v.iter().all(|&x| (0.5..1.5).contains(&x)));
        let m = reference_values(7, "x.bn.running_mean", &[64]);
        assert!(m.iter().all(|&x| (-0.2..0.2).contains(&x)));
        let w = reference_values(7, "x.conv.weight", &[8, 4, 3, 3]);
        let b = (3.0f32 / 36.0).sqrt();
        assert!(w.iter().all(|&x| x.abs() <= b));
        assert!(reference_values(7, "bn.num_batches_tracked", &[1]).iter().all(|&x| x == 0.0));
        // Different keys give different streams.
        assert_ne!(reference_values(7, "a.weight", &[4, 4]), reference_values(7, "b.weight", &[4, 4]));
    }
}
