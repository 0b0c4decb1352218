//! The fused SiLU of `exvit_layers::fast` against burn's generic `activation::silu` (the
//! reference: `x * sigmoid(x)`) on the same backend, and its gradient against burn's autodiff
//! of the generic path and against central finite differences.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexDevice};
use exvit_layers::fast::silu;

type AD = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;

/// Deterministic inputs, uniform in [-2·scale, 2·scale], from a local generator (burn's seeded
/// generator is global: tests running in parallel threads would interleave their draws).
fn input(shape: [usize; 4], scale: f64, seed: u64) -> Tensor<Flex, 4> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32 * scale as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &DEV)
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| ((x - y).abs() as f64) / (y.abs() as f64).max(1.0)).fold(0.0, f64::max)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn forward_equals_the_generic_path() {
    // Large enough for several rayon chunks; values from -16 to 16 cover both sigmoid branches
    // and saturation.
    let x = input([2, 24, 40, 40], 8.0, 1);
    let (fast, reference) = (values(silu(x.clone())), values(activation::silu(x.clone())));
    assert!(max_rel(&fast, &reference) < 1e-6, "{}", max_rel(&fast, &reference));
    // The input is shared (cloned above): it must not have been overwritten in place.
    assert_eq!(values(x.clone()), values(input([2, 24, 40, 40], 8.0, 1)));
    // A unique input may be reused, with the same values.
    let owned = input([2, 24, 40, 40], 8.0, 1);
    assert!(max_rel(&values(silu(owned)), &reference) < 1e-6);
    // A non-contiguous view (permuted) gives the permuted result.
    let p = x.clone().permute([0, 2, 3, 1]);
    let want = values(activation::silu(x.clone()).permute([0, 2, 3, 1]));
    assert!(max_rel(&values(silu(p)), &want) < 1e-6);
    // Exact points: silu(0) = 0, silu(large) = x; silu(very negative) is 0 to within the
    // smallest sigmoid the kernel makes (exp(-87)): -200 * 1.6e-38.
    let e = values(silu(Tensor::<Flex, 1>::from_data(TensorData::from([0.0f32, 50.0, -200.0]), &DEV)));
    assert_eq!(e[..2], [0.0, 50.0]);
    assert!(e[2] <= 0.0 && e[2] > -1e-35, "{}", e[2]);
}

#[test]
fn forward_on_autodiff_equals_the_generic_path_and_leaves_the_input_alone() {
    let x = Tensor::<AD, 4>::from_inner(input([3, 8, 9, 11], 4.0, 2));
    let fast = values(silu(x.clone()));
    let reference = values(activation::silu(x.clone()));
    assert!(max_rel(&fast, &reference) < 1e-6);
    assert_eq!(values(x), values(input([3, 8, 9, 11], 4.0, 2)));
}

#[test]
fn gradient_equals_autodiff_of_the_generic_path() {
    let x0 = input([2, 16, 12, 12], 4.0, 3);
    let w = input([2, 16, 12, 12], 1.0, 4);
    let grad = |fused: bool| -> Vec<f32> {
        let x = Tensor::<AD, 4>::from_inner(x0.clone()).require_grad();
        let y = if fused { silu(x.clone()) } else { activation::silu(x.clone()) };
        // A second use of x after the activation, as in a residual block.
        let loss = (y * Tensor::from_inner(w.clone())).sum() + x.clone().sum();
        let g = loss.backward();
        values(x.grad(&g).unwrap())
    };
    let (fast, reference) = (grad(true), grad(false));
    assert!(max_rel(&fast, &reference) < 1e-5, "{}", max_rel(&fast, &reference));
}

#[test]
fn gradient_matches_finite_differences() {
    // d/dx sum(w * silu(x)) at a few points, central differences in f64 on the f32 function.
    let xs = [-9.0f32, -2.5, -0.3, 0.0, 0.7, 3.0, 12.0];
    let x = Tensor::<AD, 1>::from_data(TensorData::from(xs), &DEV).require_grad();
    let loss = silu(x.clone()).sum();
    let g = values(x.grad(&loss.backward()).unwrap());
    let f = |v: f32| -> f64 { values(silu(Tensor::<Flex, 1>::from_data(TensorData::from([v]), &DEV)))[0] as f64 };
    for (i, &v) in xs.iter().enumerate() {
        let h = 1e-2f32;
        let fd = (f(v + h) - f(v - h)) / (2.0 * h as f64);
        assert!((g[i] as f64 - fd).abs() < 2e-3 * fd.abs().max(1.0), "x {v}: autodiff {} vs fd {fd}", g[i]);
    }
}
