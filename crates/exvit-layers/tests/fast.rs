//! The fused kernels of `exvit_layers::fast` against burn's generic ops on the same backend (the
//! reference): SiLU against `activation::silu` (`x * sigmoid(x)`), attention against
//! `attention_generic` (timm's reshape, permute, matmul, softmax), the 1x1 conv against burn's
//! `conv2d` and so are the dense k×k conv (im2col) and the depthwise conv, training-mode BatchNorm against `BatchNorm2d::forward_train_generic`, LayerNorm against
//! `LayerNorm::forward_generic`; their
//! gradients against
//! burn's autodiff of the generic path and against central finite differences.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexDevice};
use exvit_layers::fast::{
    attention, attention_generic, batch_norm_train, conv1x1, conv2d_dense, conv2d_depthwise, layer_norm, linear,
    linear_generic, silu, Epilogue,
};
use exvit_layers::{BatchNorm2dConfig, LayerNormConfig};

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

/// Checks `got`, autodiff's gradient of `f` at `base`, element by element against central
/// differences (step 1e-2, in f64 over the f32 function): `|got − fd| < tol · max(|fd|, 1)`.
fn check_central_differences(what: &str, base: &[f32], got: &[f32], tol: f64, f: impl Fn(&[f32]) -> f64) {
    let eps = 1e-2f32;
    for k in 0..base.len() {
        let (mut up, mut down) = (base.to_vec(), base.to_vec());
        up[k] += eps;
        down[k] -= eps;
        let fd = (f(&up) - f(&down)) / (2.0 * eps as f64);
        assert!(
            (got[k] as f64 - fd).abs() < tol * fd.abs().max(1.0),
            "{what} element {k}: autodiff {} vs fd {fd}",
            got[k]
        );
    }
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

/// `[b, n, 3c]` inputs for attention, with a spread of logits wide enough that the softmax is
/// far from uniform.
fn qkv_input(b: usize, n: usize, c: usize, seed: u64) -> Tensor<Flex, 3> {
    input([1, b, n, 3 * c], 1.5, seed).reshape([b, n, 3 * c])
}

#[test]
fn attention_equals_the_generic_path() {
    // Shapes of MobileViT (n = 16, 64, 256 tokens; head widths 16-24) and odd ones (n = 7,
    // not a multiple of the kernel's 16 lanes; one head; many heads).
    for (i, &(b, n, c, h)) in
        [(4, 16, 96, 4), (3, 64, 80, 4), (2, 256, 64, 4), (5, 7, 12, 3), (2, 33, 8, 1), (1, 19, 36, 12)]
            .iter()
            .enumerate()
    {
        let qkv = qkv_input(b, n, c, 10 + i as u64);
        let fast = values(attention(qkv.clone(), h));
        let reference = values(attention_generic(qkv.clone(), h, |a| a));
        assert_eq!(fast.len(), b * n * c);
        assert!(max_rel(&fast, &reference) < 1e-5, "b {b} n {n} c {c} h {h}: {}", max_rel(&fast, &reference));
        // On the autodiff backend, outside a tracked graph and inside one.
        let ad = Tensor::<AD, 3>::from_inner(qkv.clone());
        assert!(max_rel(&values(attention(ad.clone(), h)), &reference) < 1e-5);
        assert!(max_rel(&values(attention(ad.require_grad(), h)), &reference) < 1e-5);
        // A non-contiguous input (a transposed view) is read correctly.
        let t = qkv.clone().swap_dims(0, 1);
        let back = t.swap_dims(0, 1);
        assert!(max_rel(&values(attention(back, h)), &reference) < 1e-5);
    }
}

#[test]
fn attention_gradient_equals_autodiff_of_the_generic_path() {
    for (i, &(b, n, c, h)) in [(3, 64, 48, 4), (5, 7, 12, 3), (2, 20, 24, 2)].iter().enumerate() {
        let x0 = qkv_input(b, n, c, 20 + i as u64);
        let w = input([1, 1, b * n, c], 1.0, 30 + i as u64).reshape([b, n, c]);
        let grad = |fused: bool| -> Vec<f32> {
            let x = Tensor::<AD, 3>::from_inner(x0.clone()).require_grad();
            let y = if fused { attention(x.clone(), h) } else { attention_generic(x.clone(), h, |a| a) };
            // A second use of the input, as the residual around the attention.
            let loss = (y * Tensor::from_inner(w.clone())).sum() + x.clone().powf_scalar(2.0).sum();
            values(x.grad(&loss.backward()).unwrap())
        };
        let (fast, reference) = (grad(true), grad(false));
        assert!(max_rel(&fast, &reference) < 1e-5, "b {b} n {n} c {c} h {h}: {}", max_rel(&fast, &reference));
    }
}

#[test]
fn attention_gradient_matches_finite_differences() {
    // d/dqkv of sum(w * attention(qkv)) at every element of a small input: central differences
    // in f64 arithmetic over the f32 forward.
    let (b, n, c, h) = (2, 5, 6, 2);
    let x0 = qkv_input(b, n, c, 40);
    let w = input([1, 1, b * n, c], 1.0, 41).reshape([b, n, c]);
    let x = Tensor::<AD, 3>::from_inner(x0.clone()).require_grad();
    let loss = (attention(x.clone(), h) * Tensor::from_inner(w.clone())).sum();
    let g = values(x.grad(&loss.backward()).unwrap());
    let base = values(x0.clone());
    let f = |v: &[f32]| -> f64 {
        let t = Tensor::<Flex, 3>::from_data(TensorData::new(v.to_vec(), [b, n, 3 * c]), &DEV);
        values(attention(t, h) * w.clone()).iter().map(|&y| y as f64).sum()
    };
    check_central_differences("qkv", &base, &g, 2e-3, f);
}

/// Linear layers: rows below, at and above the kernel's 64-row tasks, MobileViT's widths and odd
/// ones. (rows, in, out).
const LINEAR: [(usize, usize, usize); 5] = [(1, 8, 3), (64, 96, 288), (130, 37, 19), (300, 64, 128), (7, 1, 5)];

fn linear_inputs(
    rows: usize,
    d_in: usize,
    d_out: usize,
    seed: u64,
) -> (Tensor<Flex, 2>, Tensor<Flex, 2>, Tensor<Flex, 1>) {
    let x = input([1, 1, rows, d_in], 1.0, seed).reshape([rows, d_in]);
    let w = input([1, 1, d_out, d_in], 0.5, seed + 1).reshape([d_out, d_in]);
    let b = input([1, 1, 1, d_out], 1.0, seed + 2).reshape([d_out]);
    (x, w, b)
}

#[test]
fn linear_equals_the_generic_path() {
    for (t, &(rows, d_in, d_out)) in LINEAR.iter().enumerate() {
        let (x, w, b) = linear_inputs(rows, d_in, d_out, 60 + 3 * t as u64);
        for silu in [false, true] {
            for bias in [None, Some(b.clone())] {
                let reference = values(linear_generic(x.clone(), w.clone(), bias.clone(), silu));
                let fast = values(linear(x.clone(), w.clone(), bias.clone(), silu));
                assert!(
                    max_rel(&fast, &reference) < 1e-5,
                    "{rows}x{d_in}->{d_out} silu {silu}: {}",
                    max_rel(&fast, &reference)
                );
                // A transposed (non-contiguous) weight view is read correctly.
                let wt = w.clone().transpose().transpose();
                assert!(max_rel(&values(linear(x.clone(), wt, bias.clone(), silu)), &reference) < 1e-5);
                // On the autodiff backend, outside a tracked graph and inside one.
                let ad = |t: &Tensor<Flex, 2>| Tensor::<AD, 2>::from_inner(t.clone());
                let adb = bias.as_ref().map(|b| Tensor::<AD, 1>::from_inner(b.clone()));
                assert!(max_rel(&values(linear(ad(&x), ad(&w), adb.clone(), silu)), &reference) < 1e-5);
                assert!(max_rel(&values(linear(ad(&x).require_grad(), ad(&w), adb, silu)), &reference) < 1e-5);
            }
        }
    }
}

#[test]
fn linear_gradients_equal_autodiff_of_the_generic_path() {
    for (t, &(rows, d_in, d_out)) in LINEAR.iter().enumerate() {
        let (x0, w0, b0) = linear_inputs(rows, d_in, d_out, 80 + 3 * t as u64);
        let r = input([1, 1, rows, d_out], 1.0, 90 + t as u64).reshape([rows, d_out]);
        for silu in [false, true] {
            let grads = |fused: bool| -> [Vec<f32>; 3] {
                let x = Tensor::<AD, 2>::from_inner(x0.clone()).require_grad();
                let w = Tensor::<AD, 2>::from_inner(w0.clone()).require_grad();
                let b = Tensor::<AD, 1>::from_inner(b0.clone()).require_grad();
                let f = if fused { linear } else { linear_generic };
                let loss = (f(x.clone(), w.clone(), Some(b.clone()), silu) * Tensor::from_inner(r.clone())).sum();
                let g = loss.backward();
                [values(x.grad(&g).unwrap()), values(w.grad(&g).unwrap()), values(b.grad(&g).unwrap())]
            };
            let (fast, reference) = (grads(true), grads(false));
            for (name, f, r) in
                [("x", &fast[0], &reference[0]), ("w", &fast[1], &reference[1]), ("b", &fast[2], &reference[2])]
            {
                assert!(max_rel(f, r) < 1e-4, "{rows}x{d_in}->{d_out} silu {silu}: d{name} {}", max_rel(f, r));
            }
        }
    }
}

#[test]
fn linear_gradient_matches_finite_differences() {
    // d/dw of sum(r * silu(x·wᵀ + b)) at every weight: central differences over the f32 forward.
    let (rows, d_in, d_out) = (70, 3, 4);
    let (x0, w0, b0) = linear_inputs(rows, d_in, d_out, 100);
    let r = input([1, 1, rows, d_out], 1.0, 103).reshape([rows, d_out]);
    let w = Tensor::<AD, 2>::from_inner(w0.clone()).require_grad();
    let loss = (linear(Tensor::<AD, 2>::from_inner(x0.clone()), w.clone(), Some(Tensor::from_inner(b0.clone())), true)
        * Tensor::from_inner(r.clone()))
    .sum();
    let g = values(w.grad(&loss.backward()).unwrap());
    let base = values(w0.clone());
    let f = |v: &[f32]| -> f64 {
        let wt = Tensor::<Flex, 2>::from_data(TensorData::new(v.to_vec(), [d_out, d_in]), &DEV);
        values(linear(x0.clone(), wt, Some(b0.clone()), true) * r.clone()).iter().map(|&y| y as f64).sum()
    };
    check_central_differences("weight", &base, &g, 2e-3, f);
}

/// A convolution under test: exvit's fused op and burn's `conv2d` (the reference), on any
/// backend, for one stride and padding.
#[derive(Debug, Clone, Copy)]
enum Conv {
    /// `fast::conv1x1`.
    Pointwise,
    /// `fast::conv2d_dense`: stride, padding.
    Dense(usize, usize),
    /// `fast::conv2d_depthwise`: stride, padding.
    Depthwise(usize, usize),
}

impl Conv {
    fn fused<B: Backend>(self, x: Tensor<B, 4>, w: Tensor<B, 4>, b: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
        self.fused_with(x, w, b.into())
    }

    fn fused_with<B: Backend>(self, x: Tensor<B, 4>, w: Tensor<B, 4>, epi: Epilogue<B>) -> Tensor<B, 4> {
        match self {
            Conv::Pointwise => conv1x1(x, w, epi),
            Conv::Dense(s, p) => conv2d_dense(x, w, epi, s, p),
            Conv::Depthwise(s, p) => conv2d_depthwise(x, w, epi, s, p),
        }
    }

    /// The fused op with an epilogue (scale, shift, SiLU: each present or not) equals burn's
    /// conv followed by burn's ops, on a pool of 4 threads (so that batch 1 splits its output
    /// into channel blocks) and of 1, and on the autodiff backend.
    fn check_epilogue(self, xs: [usize; 4], ws: [usize; 4], seed: u64) {
        // The scale (up to 3) magnifies the conv's own rounding (1e-5 above).
        const TOL: f64 = 5e-5;
        let (x, wt) = (input(xs, 1.0, seed), input(ws, 0.5, seed + 1));
        let o = ws[0];
        let scale = input([1, 1, 1, o], 1.5, seed + 2).reshape([o]);
        let shift = input([1, 1, 1, o], 1.0, seed + 3).reshape([o]);
        for (with_scale, with_shift, with_silu) in
            [(true, true, true), (true, false, false), (false, true, true), (false, false, true), (false, true, false)]
        {
            let epi = Epilogue {
                scale: with_scale.then(|| scale.clone()),
                shift: with_shift.then(|| shift.clone()),
                silu: with_silu,
            };
            let mut want = self.reference(x.clone(), wt.clone(), None);
            if with_scale {
                want = want * scale.clone().reshape([1, o, 1, 1]);
            }
            if with_shift {
                want = want + shift.clone().reshape([1, o, 1, 1]);
            }
            if with_silu {
                want = activation::silu(want);
            }
            let want = values(want);
            let case = format!("{self:?} {xs:?} {ws:?} scale {with_scale} shift {with_shift} silu {with_silu}");
            for threads in [4, 1] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = values(pool.install(|| self.fused_with(x.clone(), wt.clone(), epi.clone())));
                assert!(max_rel(&got, &want) < TOL, "{case}, {threads} threads: {}", max_rel(&got, &want));
            }
            let ad = Epilogue::<AD> {
                scale: epi.scale.map(Tensor::from_inner),
                shift: epi.shift.map(Tensor::from_inner),
                silu: with_silu,
            };
            let y = self.fused_with(
                Tensor::<AD, 4>::from_inner(x.clone()).require_grad(),
                Tensor::from_inner(wt.clone()),
                ad,
            );
            let got = values(y);
            assert!(max_rel(&got, &want) < TOL, "{case}: autodiff backend {}", max_rel(&got, &want));
        }
    }

    fn reference<B: Backend>(self, x: Tensor<B, 4>, w: Tensor<B, 4>, b: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
        let (s, p, groups) = match self {
            Conv::Pointwise => (1, 0, 1),
            Conv::Dense(s, p) => (s, p, 1),
            Conv::Depthwise(s, p) => (s, p, w.dims()[0]),
        };
        conv2d(x, w, b, ConvOptions::new([s, s], [p, p], [1, 1], groups))
    }

    /// Output shape for an input `[n, _, h, w]` and a weight `[o, _, k, _]`.
    fn out_shape(self, [n, _, h, w]: [usize; 4], [o, _, k, _]: [usize; 4]) -> [usize; 4] {
        let (s, p) = match self {
            Conv::Pointwise => (1, 0),
            Conv::Dense(s, p) | Conv::Depthwise(s, p) => (s, p),
        };
        [n, o, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1]
    }

    /// The fused op equals the reference, with and without bias, on the plain backend and on
    /// the autodiff one, and reads a non-contiguous input correctly.
    fn check_values(self, xs: [usize; 4], ws: [usize; 4], seed: u64) {
        let x = input(xs, 1.0, seed);
        let wt = input(ws, 0.5, seed + 1);
        let bias = input([1, 1, 1, ws[0]], 1.0, seed + 2).reshape([ws[0]]);
        for b in [None, Some(bias)] {
            let fast = self.fused(x.clone(), wt.clone(), b.clone());
            assert_eq!(fast.dims(), self.out_shape(xs, ws), "{self:?} {xs:?}");
            let (fast, reference) = (values(fast), values(self.reference(x.clone(), wt.clone(), b.clone())));
            assert!(max_rel(&fast, &reference) < 1e-5, "{self:?} {xs:?} {ws:?}: {}", max_rel(&fast, &reference));
            let ad = |v: Tensor<Flex, 4>| Tensor::<AD, 4>::from_inner(v).require_grad();
            let y = self.fused(ad(x.clone()), ad(wt.clone()), b.clone().map(Tensor::from_inner));
            assert!(max_rel(&values(y), &reference) < 1e-5, "{self:?} {xs:?}: autodiff backend");
        }
        let view = x.clone().permute([0, 2, 3, 1]).permute([0, 3, 1, 2]);
        let want = values(self.reference(x, wt.clone(), None));
        assert!(max_rel(&values(self.fused(view, wt, None)), &want) < 1e-5, "{self:?} {xs:?}: non-contiguous input");
    }

    /// The gradients of x, w and the bias equal burn's autodiff of the reference.
    fn check_gradients(self, xs: [usize; 4], ws: [usize; 4], seed: u64) {
        let (x0, w0) = (input(xs, 1.0, seed), input(ws, 0.5, seed + 1));
        let b0 = input([1, 1, 1, ws[0]], 1.0, seed + 2).reshape([ws[0]]);
        let r = input(self.out_shape(xs, ws), 1.0, seed + 3);
        let grads = |fused: bool| -> [Vec<f32>; 3] {
            let x = Tensor::<AD, 4>::from_inner(x0.clone()).require_grad();
            let w = Tensor::<AD, 4>::from_inner(w0.clone()).require_grad();
            let b = Tensor::<AD, 1>::from_inner(b0.clone()).require_grad();
            let (xc, wc, bc) = (x.clone(), w.clone(), Some(b.clone()));
            let y = if fused { self.fused(xc, wc, bc) } else { self.reference(xc, wc, bc) };
            let g = (y * Tensor::from_inner(r.clone())).sum().backward();
            [values(x.grad(&g).unwrap()), values(w.grad(&g).unwrap()), values(b.grad(&g).unwrap())]
        };
        let (f, g) = (grads(true), grads(false));
        for (name, a, b) in [("input", &f[0], &g[0]), ("weight", &f[1], &g[1]), ("bias", &f[2], &g[2])] {
            assert!(max_rel(a, b) < 1e-4, "{self:?} {xs:?} {ws:?}: {name} gradient {}", max_rel(a, b));
        }
        // A constant input (the stem's image): no input gradient, the weight's unchanged.
        let x = Tensor::<AD, 4>::from_inner(x0.clone());
        let w = Tensor::<AD, 4>::from_inner(w0.clone()).require_grad();
        let g = (self.fused(x.clone(), w.clone(), None) * Tensor::from_inner(r.clone())).sum().backward();
        assert!(x.grad(&g).is_none(), "{self:?}: an input gradient nobody asked for");
        assert!(max_rel(&values(w.grad(&g).unwrap()), &f[1]) < 1e-5, "{self:?}: weight gradient without the input's");
    }

    /// The gradients of x and w against central finite differences of the fused forward.
    fn check_finite_differences(self, xs: [usize; 4], ws: [usize; 4], seed: u64) {
        let (x0, w0) = (values(input(xs, 1.0, seed)), values(input(ws, 1.0, seed + 1)));
        let r = input(self.out_shape(xs, ws), 1.0, seed + 2);
        let f = |xv: &[f32], wv: &[f32]| -> f64 {
            let x = Tensor::<Flex, 4>::from_data(TensorData::new(xv.to_vec(), xs), &DEV);
            let w = Tensor::<Flex, 4>::from_data(TensorData::new(wv.to_vec(), ws), &DEV);
            values(self.fused(x, w, None) * r.clone()).iter().map(|&v| v as f64).sum()
        };
        let x = Tensor::<AD, 4>::from_data(TensorData::new(x0.clone(), xs), &DEV).require_grad();
        let w = Tensor::<AD, 4>::from_data(TensorData::new(w0.clone(), ws), &DEV).require_grad();
        let g = (self.fused(x.clone(), w.clone(), None) * Tensor::from_inner(r.clone())).sum().backward();
        let (gx, gw) = (values(x.grad(&g).unwrap()), values(w.grad(&g).unwrap()));
        check_central_differences(&format!("{self:?} input"), &x0, &gx, 2e-3, |v| f(v, &w0));
        check_central_differences(&format!("{self:?} weight"), &w0, &gw, 2e-3, |v| f(&x0, v));
    }
}

/// 1x1 convs: pixels per image below, at and above the kernel's 2048-column tiles; channels
/// from 1 up; pixels a multiple of 256 (the input gradient stages dY in 512 columns: 4096, and
/// 768 with a shorter last stage), input channels not a multiple of the weight gradient's 16.
/// (input shape, weight shape).
const POINTWISE: [([usize; 4], [usize; 4]); 5] = [
    ([2, 16, 64, 64], [64, 16, 1, 1]),
    ([3, 5, 9, 11], [7, 5, 1, 1]),
    ([1, 1, 2, 2], [3, 1, 1, 1]),
    ([2, 24, 45, 46], [1, 24, 1, 1]),
    ([1, 20, 16, 48], [9, 20, 1, 1]),
];

/// Dense k×k convs: MobileViT's 3x3 (stride 1 and 2, padding 1), no padding, a 5x5 kernel, odd
/// sizes, one image of several 2048-pixel bands, more images than threads, pixels a multiple of
/// 256 (padded col and dY rows) with one image and with several. (input, weight, stride,
/// padding).
const DENSE: [([usize; 4], [usize; 4], usize, usize); 7] = [
    ([4, 8, 16, 16], [12, 8, 3, 3], 1, 1),
    ([3, 3, 17, 15], [16, 3, 3, 3], 2, 1),
    ([1, 6, 9, 10], [5, 6, 3, 3], 1, 0),
    ([2, 4, 11, 12], [6, 4, 5, 5], 2, 2),
    ([1, 16, 70, 64], [8, 16, 3, 3], 1, 1),
    ([5, 2, 4, 4], [3, 2, 3, 3], 1, 1),
    ([1, 3, 32, 32], [4, 3, 3, 3], 1, 1),
];

/// Depthwise convs: MobileViT's 3x3 (stride 1 and 2), odd sizes, a 5x5 kernel, no padding, rows
/// longer than the 16 lanes. (input, kernel, stride, padding).
/// Stride 2 at every padding parity and both width parities (the phase split has its own copy
/// for stride 2).
const DEPTHWISE: [([usize; 4], usize, usize, usize); 9] = [
    ([2, 8, 16, 16], 3, 1, 1),
    ([3, 5, 17, 15], 3, 2, 1),
    ([1, 4, 9, 10], 3, 1, 0),
    ([2, 3, 11, 12], 5, 2, 2),
    ([1, 2, 40, 37], 3, 1, 1),
    ([2, 6, 4, 4], 3, 2, 1),
    ([1, 3, 9, 9], 3, 2, 0),
    ([2, 2, 10, 13], 7, 2, 3),
    ([1, 2, 12, 11], 3, 3, 1),
];

/// Batch 1 on small feature maps (MobileViT's 8x8 and 16x16 at 256), where the forward splits
/// the output channels among tasks, and a batch of several bands. (input, output channels).
const EPILOGUE: [([usize; 4], usize); 4] =
    [([1, 24, 8, 8], 40), ([1, 8, 16, 16], 36), ([2, 6, 50, 48], 20), ([3, 4, 5, 7], 3)];

#[test]
fn conv_epilogues_equal_burns_ops() {
    for (t, (xs, o)) in EPILOGUE.into_iter().enumerate() {
        let seed = 1000 + 10 * t as u64;
        Conv::Pointwise.check_epilogue(xs, [o, xs[1], 1, 1], seed);
        Conv::Dense(1, 1).check_epilogue(xs, [o, xs[1], 3, 3], seed);
        Conv::Dense(2, 1).check_epilogue(xs, [o, xs[1], 3, 3], seed);
        Conv::Depthwise(1, 1).check_epilogue(xs, [xs[1], 1, 3, 3], seed);
        Conv::Depthwise(2, 1).check_epilogue(xs, [xs[1], 1, 3, 3], seed);
    }
}

#[test]
fn pointwise_conv_equals_burns_conv2d() {
    for (t, (xs, ws)) in POINTWISE.into_iter().enumerate() {
        Conv::Pointwise.check_values(xs, ws, 50 + 10 * t as u64);
    }
}

#[test]
fn pointwise_conv_gradients_equal_autodiff_of_burns_conv2d() {
    for (t, (xs, ws)) in POINTWISE.into_iter().enumerate() {
        Conv::Pointwise.check_gradients(xs, ws, 90 + 10 * t as u64);
    }
}

#[test]
fn pointwise_conv_gradient_matches_finite_differences() {
    Conv::Pointwise.check_finite_differences([2, 3, 3, 2], [4, 3, 1, 1], 110);
}

#[test]
fn dense_conv_equals_burns_conv2d() {
    for (t, (xs, ws, s, p)) in DENSE.into_iter().enumerate() {
        Conv::Dense(s, p).check_values(xs, ws, 400 + 10 * t as u64);
    }
}

#[test]
fn dense_conv_gradients_equal_autodiff_of_burns_conv2d() {
    for (t, (xs, ws, s, p)) in DENSE.into_iter().enumerate() {
        Conv::Dense(s, p).check_gradients(xs, ws, 500 + 10 * t as u64);
    }
}

#[test]
fn dense_conv_gradient_matches_finite_differences() {
    Conv::Dense(2, 1).check_finite_differences([2, 2, 5, 4], [3, 2, 3, 3], 600);
}

#[test]
fn depthwise_conv_equals_burns_grouped_conv2d() {
    for (t, (xs, k, s, p)) in DEPTHWISE.into_iter().enumerate() {
        Conv::Depthwise(s, p).check_values(xs, [xs[1], 1, k, k], 700 + 10 * t as u64);
    }
}

#[test]
fn depthwise_conv_gradients_equal_autodiff_of_burns_grouped_conv2d() {
    for (t, (xs, k, s, p)) in DEPTHWISE.into_iter().enumerate() {
        Conv::Depthwise(s, p).check_gradients(xs, [xs[1], 1, k, k], 800 + 10 * t as u64);
    }
}

#[test]
fn depthwise_conv_gradient_matches_finite_differences() {
    Conv::Depthwise(2, 1).check_finite_differences([2, 2, 5, 4], [2, 1, 3, 3], 900);
}

/// The fused BN and the generic one on the same input (with `silu`, each followed by SiLU:
/// fused into the op, and burn's `activation::silu` after the generic BN): output, statistics,
/// and the gradients of x, gamma and beta for the loss `sum(y * r)`.
fn bn_both(shape: [usize; 4], seed: u64, silu: bool) -> [(Vec<f32>, Vec<f32>); 6] {
    let [_, c, _, _] = shape;
    // An offset and spread per channel, so that the statistics matter.
    let x0 = input(shape, 1.5, seed) + input([1, 1, 1, c], 3.0, seed + 1).reshape([1, c, 1, 1]);
    let g0 = input([1, 1, 1, c], 1.0, seed + 2).reshape([c]);
    let b0 = input([1, 1, 1, c], 1.0, seed + 3).reshape([c]);
    let r = input(shape, 1.0, seed + 4);
    let bn = BatchNorm2dConfig::new(c).init::<AD>(&DEV);
    let run = |fused: bool| {
        let x = Tensor::<AD, 4>::from_inner(x0.clone()).require_grad();
        let g = Tensor::<AD, 1>::from_inner(g0.clone()).require_grad();
        let b = Tensor::<AD, 1>::from_inner(b0.clone()).require_grad();
        let (y, mean, var) = if fused {
            let out = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5, silu)
                .unwrap_or_else(|_| panic!("fused on flex"));
            (out.y, out.mean, out.var)
        } else {
            let (y, mean, var) = bn.forward_train_generic(x.clone(), g.clone(), b.clone());
            (if silu { activation::silu(y) } else { y }, mean, var)
        };
        let grads = (y.clone() * Tensor::from_inner(r.clone())).sum().backward();
        [
            values(y),
            values(mean),
            values(var),
            values(x.grad(&grads).unwrap()),
            values(g.grad(&grads).unwrap()),
            values(b.grad(&grads).unwrap()),
        ]
    };
    let (f, g) = (run(true), run(false));
    let mut out: Vec<(Vec<f32>, Vec<f32>)> = f.into_iter().zip(g).collect();
    std::array::from_fn(|_| out.remove(0))
}

#[test]
fn batch_norm_train_equals_the_generic_path() {
    // Planes below and above the 16 lanes, one image and several, odd sizes.
    for (k, shape) in [[4, 8, 16, 16], [3, 5, 7, 9], [1, 3, 2, 3], [2, 16, 33, 31]].into_iter().enumerate() {
        let names = ["output", "mean", "variance", "x gradient", "gamma gradient", "beta gradient"];
        for silu in [false, true] {
            for (name, (fast, reference)) in names.iter().zip(bn_both(shape, 200 + 10 * k as u64, silu)) {
                assert_eq!(fast.len(), reference.len(), "{name}");
                let err = max_rel(&fast, &reference);
                assert!(err < 2e-4, "{name}, {shape:?}, silu {silu}: {err}");
            }
        }
    }
    // On the plain backend too (no autodiff), with the same output.
    let x = input([2, 4, 5, 5], 1.0, 9);
    let (g, b) = (input([1, 1, 1, 4], 1.0, 10).reshape([4]), input([1, 1, 1, 4], 1.0, 11).reshape([4]));
    let plain =
        batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5, false).unwrap_or_else(|_| panic!("fused on flex"));
    let with_silu =
        batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5, true).unwrap_or_else(|_| panic!("fused on flex"));
    let bn = BatchNorm2dConfig::new(4).init::<Flex>(&DEV);
    let (y, mean, var) = bn.forward_train_generic(x, g, b);
    assert!(max_rel(&values(with_silu.y), &values(activation::silu(y.clone()))) < 2e-5);
    assert!(max_rel(&values(plain.y), &values(y)) < 2e-5);
    assert!(max_rel(&values(plain.mean), &values(mean)) < 1e-5);
    assert!(max_rel(&values(plain.var), &values(var)) < 1e-5);
}

#[test]
fn batch_norm_train_gradient_matches_finite_differences() {
    // With and without the SiLU fused after the BN.
    for silu in [false, true] {
        let (n, c, h, w) = (2, 2, 2, 3);
        let x0 = values(input([n, c, h, w], 2.0, 300));
        let g0 = vec![1.3f32, -0.7];
        let b0 = vec![0.2f32, 0.5];
        let r = input([n, c, h, w], 1.0, 301);
        let loss = |xv: &[f32], gv: &[f32], bv: &[f32]| -> f64 {
            let x = Tensor::<Flex, 4>::from_data(TensorData::new(xv.to_vec(), [n, c, h, w]), &DEV);
            let g = Tensor::<Flex, 1>::from_data(TensorData::new(gv.to_vec(), [c]), &DEV);
            let b = Tensor::<Flex, 1>::from_data(TensorData::new(bv.to_vec(), [c]), &DEV);
            let y = batch_norm_train(x, g, b, 1e-5, silu).unwrap_or_else(|_| panic!("fused")).y;
            values(y * r.clone()).iter().map(|&v| v as f64).sum()
        };
        let x = Tensor::<AD, 4>::from_data(TensorData::new(x0.clone(), [n, c, h, w]), &DEV).require_grad();
        let g = Tensor::<AD, 1>::from_data(TensorData::new(g0.clone(), [c]), &DEV).require_grad();
        let b = Tensor::<AD, 1>::from_data(TensorData::new(b0.clone(), [c]), &DEV).require_grad();
        let y = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5, silu).unwrap_or_else(|_| panic!("fused")).y;
        let grads = (y * Tensor::from_inner(r.clone())).sum().backward();
        let got = [values(x.grad(&grads).unwrap()), values(g.grad(&grads).unwrap()), values(b.grad(&grads).unwrap())];
        check_central_differences("x", &x0, &got[0], 5e-3, |v| loss(v, &g0, &b0));
        check_central_differences("gamma", &g0, &got[1], 5e-3, |v| loss(&x0, v, &b0));
        check_central_differences("beta", &b0, &got[2], 5e-3, |v| loss(&x0, &g0, v));
    }
}

/// The fused LayerNorm and the generic one (`LayerNorm::forward_generic`) on the same
/// `[rows, c]` input, through `[2, rows/2, c]`: output and the gradients of x, weight and bias
/// for the loss `sum(y * r)`.
fn ln_both(rows: usize, c: usize, seed: u64) -> [(Vec<f32>, Vec<f32>); 4] {
    // An offset and a spread per row, so that the statistics matter.
    let x0 = input([1, 1, rows, c], 1.5, seed) + input([1, 1, rows, 1], 3.0, seed + 1);
    let x0: Tensor<Flex, 3> = x0.reshape([2, rows / 2, c]);
    let g0 = input([1, 1, 1, c], 1.0, seed + 2).reshape([c]);
    let b0 = input([1, 1, 1, c], 1.0, seed + 3).reshape([c]);
    let r: Tensor<Flex, 3> = input([1, 1, rows, c], 1.0, seed + 4).reshape([2, rows / 2, c]);
    let run = |fused: bool| {
        let mut ln = LayerNormConfig::new(c).init::<AD>(&DEV);
        ln.weight = burn::module::Param::from_tensor(Tensor::from_inner(g0.clone()));
        ln.bias = burn::module::Param::from_tensor(Tensor::from_inner(b0.clone()));
        let x = Tensor::<AD, 3>::from_inner(x0.clone()).require_grad();
        let y = if fused { ln.forward(x.clone()) } else { ln.forward_generic(x.clone()) };
        let grads = (y.clone() * Tensor::from_inner(r.clone())).sum().backward();
        [
            values(y),
            values(x.grad(&grads).unwrap()),
            values(ln.weight.val().grad(&grads).unwrap()),
            values(ln.bias.val().grad(&grads).unwrap()),
        ]
    };
    let (f, g) = (run(true), run(false));
    let mut out: Vec<(Vec<f32>, Vec<f32>)> = f.into_iter().zip(g).collect();
    std::array::from_fn(|_| out.remove(0))
}

#[test]
fn layer_norm_equals_the_generic_path() {
    // Rows below and above the 16 lanes, odd widths, and more rows than one task's block (256).
    for (k, (rows, c)) in [(6, 8), (10, 17), (4, 1), (600, 64), (2, 144)].into_iter().enumerate() {
        let names = ["output", "x gradient", "weight gradient", "bias gradient"];
        for (name, (fast, reference)) in names.iter().zip(ln_both(rows, c, 400 + 10 * k as u64)) {
            assert_eq!(fast.len(), reference.len(), "{name}");
            assert!(max_rel(&fast, &reference) < 2e-4, "{name}, {rows}x{c}: {}", max_rel(&fast, &reference));
        }
    }
    // On the plain backend too (no autodiff).
    let ln = LayerNormConfig::new(5).init::<Flex>(&DEV);
    let x: Tensor<Flex, 2> = input([1, 1, 7, 5], 2.0, 9).reshape([7, 5]);
    assert!(max_rel(&values(ln.forward(x.clone())), &values(ln.forward_generic(x))) < 2e-5);
}

#[test]
fn layer_norm_gradient_matches_finite_differences() {
    let (rows, c) = (3, 5);
    let x0 = values(input([1, 1, rows, c], 2.0, 500));
    let g0 = values(input([1, 1, 1, c], 1.0, 501));
    let b0 = values(input([1, 1, 1, c], 1.0, 502));
    let r: Tensor<Flex, 2> = input([1, 1, rows, c], 1.0, 503).reshape([rows, c]);
    let loss = |xv: &[f32], gv: &[f32], bv: &[f32]| -> f64 {
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(xv.to_vec(), [rows, c]), &DEV);
        let g = Tensor::<Flex, 1>::from_data(TensorData::new(gv.to_vec(), [c]), &DEV);
        let b = Tensor::<Flex, 1>::from_data(TensorData::new(bv.to_vec(), [c]), &DEV);
        let y = layer_norm(x, g, b, 1e-5).unwrap_or_else(|_| panic!("fused"));
        values(y * r.clone()).iter().map(|&v| v as f64).sum()
    };
    let x = Tensor::<AD, 2>::from_data(TensorData::new(x0.clone(), [rows, c]), &DEV).require_grad();
    let g = Tensor::<AD, 1>::from_data(TensorData::new(g0.clone(), [c]), &DEV).require_grad();
    let b = Tensor::<AD, 1>::from_data(TensorData::new(b0.clone(), [c]), &DEV).require_grad();
    let y = layer_norm(x.clone(), g.clone(), b.clone(), 1e-5).unwrap_or_else(|_| panic!("fused"));
    let grads = (y * Tensor::from_inner(r.clone())).sum().backward();
    let got = [values(x.grad(&grads).unwrap()), values(g.grad(&grads).unwrap()), values(b.grad(&grads).unwrap())];
    check_central_differences("x", &x0, &got[0], 5e-3, |v| loss(v, &g0, &b0));
    check_central_differences("weight", &g0, &got[1], 5e-3, |v| loss(&x0, v, &b0));
    check_central_differences("bias", &b0, &got[2], 5e-3, |v| loss(&x0, &g0, v));
}

#[test]
fn batch_norm_train_statistics_survive_a_large_mean() {
    // Mean 1000, spread 0.01: a one-pass E[x²] − E[x]² in f32 would lose every digit of the
    // variance; the kernel's shifted sums must not. Reference: f64 two-pass over the f32 inputs.
    let shape = [3, 2, 17, 19];
    let x = input(shape, 0.005, 77).add_scalar(1000.0);
    let data = values(x.clone());
    let (g, b) = (Tensor::<Flex, 1>::ones([2], &DEV), Tensor::<Flex, 1>::zeros([2], &DEV));
    let out = batch_norm_train(x, g, b, 0.0, false).unwrap_or_else(|_| panic!("fused on flex"));
    let (mean, var) = (values(out.mean), values(out.var));
    let plane = 17 * 19;
    for c in 0..2 {
        let v: Vec<f64> = (0..3).flat_map(|n| data[(n * 2 + c) * plane..][..plane].iter().map(|&x| x as f64)).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let want = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
        assert!((mean[c] as f64 - m).abs() < 1e-3, "channel {c}: mean {} vs {m}", mean[c]);
        assert!((var[c] as f64 - want).abs() < 1e-3 * want, "channel {c}: variance {} vs {want}", var[c]);
    }
}

#[test]
fn convolution_gradients_are_reproducible_bit_for_bit() {
    // More images than threads, so that the dense conv's weight gradient is summed in parallel:
    // the same inputs must give the same bits every time, whatever rayon's scheduling.
    let (x0, w0) = (input([12, 8, 20, 20], 1.0, 950), input([16, 8, 3, 3], 0.5, 951));
    let r = input([12, 16, 20, 20], 1.0, 952);
    let grads = || {
        let x = Tensor::<AD, 4>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<AD, 4>::from_inner(w0.clone()).require_grad();
        let g = (conv2d_dense(x.clone(), w.clone(), None, 1, 1) * Tensor::from_inner(r.clone())).sum().backward();
        (values(x.grad(&g).unwrap()), values(w.grad(&g).unwrap()))
    };
    let first = grads();
    // Several at once, so that rayon's workers interleave the tasks differently each time.
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..3).map(|_| s.spawn(|| (0..3).map(|_| grads()).collect::<Vec<_>>())).collect();
        for run in runs {
            for g in run.join().unwrap() {
                assert!(g == first, "a gradient changed between identical runs");
            }
        }
    });
}

/// MobileViT's unfold and fold equal the reshape/permute path they replace, on the plain backend
/// and under autodiff, and their gradients are each other (exactly: both are permutations).
#[test]
fn unfold_and_fold_equal_reshape_and_permute() {
    use exvit_layers::fast::{fold_patches, unfold_patches};
    for (t, (shape, p)) in
        [([2, 5, 4, 6], 2), ([1, 3, 6, 9], 3), ([1, 16, 32, 32], 2), ([3, 1, 2, 2], 1)].into_iter().enumerate()
    {
        let [b, c, h, w] = shape;
        let (nh, nw) = (h / p, w / p);
        let x = input(shape, 1.0, 1200 + t as u64);
        let want = x.clone().reshape([b, c, nh, p, nw, p]).permute([0, 3, 5, 2, 4, 1]).reshape([b * p * p, nh * nw, c]);
        let tokens = unfold_patches(x.clone(), p);
        assert_eq!(values(tokens.clone()), values(want), "unfold {shape:?} p{p}");
        assert_eq!(values(fold_patches(tokens.clone(), b, (nh, nw), p)), values(x.clone()), "fold {shape:?} p{p}");
        // Under autodiff: the gradient of Σ unfold(x)·r is fold(r), and of Σ fold(t)·q is unfold(q).
        let r = input([1, b * p * p, nh * nw, c], 1.0, 1300 + t as u64).reshape([b * p * p, nh * nw, c]);
        let xa = Tensor::<AD, 4>::from_inner(x.clone()).require_grad();
        let g = (unfold_patches(xa.clone(), p) * Tensor::from_inner(r.clone())).sum().backward();
        assert_eq!(
            values(xa.grad(&g).unwrap()),
            values(fold_patches(r.clone(), b, (nh, nw), p)),
            "unfold gradient {shape:?}"
        );
        let ta = Tensor::<AD, 3>::from_inner(tokens).require_grad();
        let g = (fold_patches(ta.clone(), b, (nh, nw), p) * Tensor::from_inner(x.clone())).sum().backward();
        assert_eq!(values(ta.grad(&g).unwrap()), values(unfold_patches(x, p)), "fold gradient {shape:?}");
    }
}

/// The probe's host products against an f64 product: sizes that are no multiple of gemm's
/// tiles or of the thread count (`matmul_tn` splits the rows among the threads and adds their
/// partials), with and without a bias, into buffers holding garbage.
#[test]
fn probe_products_match_a_naive_product() {
    use exvit_layers::fast::{matmul_nn, matmul_tn};
    let det = |n: usize, seed: u64| values(input([1, 1, 1, n], 1.0, seed));
    for (n, d, k) in [(1001, 37, 23), (3, 70, 1001), (1, 1, 1)] {
        let (x, w, g, b) = (det(n * d, 1), det(d * k, 2), det(n * k, 3), det(k, 4));
        for bias in [None, Some(b.as_slice())] {
            let mut out = vec![f32::NAN; n * k];
            matmul_nn(&x, [n, d], &w, k, bias, &mut out);
            for i in 0..n {
                for j in 0..k {
                    let want = (0..d).map(|c| f64::from(x[i * d + c]) * f64::from(w[c * k + j])).sum::<f64>()
                        + bias.map_or(0.0, |b| f64::from(b[j]));
                    let got = f64::from(out[i * k + j]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "x·w [{n},{d},{k}] ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
        let mut out = vec![f32::NAN; d * k];
        matmul_tn(&x, [n, d], &g, k, &mut out);
        for c in 0..d {
            for j in 0..k {
                let want = (0..n).map(|i| f64::from(x[i * d + c]) * f64::from(g[i * k + j])).sum::<f64>();
                let got = f64::from(out[c * k + j]);
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "xᵀ·g [{n},{d},{k}] ({c},{j}): {got} vs {want}"
                );
            }
        }
    }
}

/// The kernels that sum per-task partials (LayerNorm's dγ/dβ, the Linear layer's bias
/// gradient) give the same bits on 1 thread and on 3: the partials are added in task order, not
/// along rayon's work-stealing tree, whose shape follows the threads' timing. A run resumed from
/// a checkpoint must equal the uninterrupted run bit for bit (`exvit-train`'s `tests/replica.rs`).
#[test]
fn summed_gradients_do_not_depend_on_the_thread_count() {
    let on = |threads: usize, f: &(dyn Fn() -> Vec<Vec<f32>> + Sync)| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    };
    // 4096 rows: 16 of LayerNorm's blocks; 8192 rows: 8 of the bias gradient's.
    let ln = || ln_both(4096, 24, 700).into_iter().map(|(fast, _)| fast).collect::<Vec<_>>();
    assert_eq!(on(1, &ln), on(3, &ln), "LayerNorm");
    let (rows, d_in, d_out) = (8192, 8, 40);
    let (x0, w0, b0) = linear_inputs(rows, d_in, d_out, 710);
    let r = input([1, 1, rows, d_out], 1.0, 711).reshape([rows, d_out]);
    let lin = || {
        let x = Tensor::<AD, 2>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<AD, 2>::from_inner(w0.clone()).require_grad();
        let b = Tensor::<AD, 1>::from_inner(b0.clone()).require_grad();
        let g = (linear(x.clone(), w.clone(), Some(b.clone()), true) * Tensor::from_inner(r.clone())).sum().backward();
        vec![values(x.grad(&g).unwrap()), values(w.grad(&g).unwrap()), values(b.grad(&g).unwrap())]
    };
    assert_eq!(on(1, &lin), on(3, &lin), "Linear");
}
