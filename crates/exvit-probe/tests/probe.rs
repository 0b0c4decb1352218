//! Linear probes against scikit-learn, known answers, and linear CKA against NumPy
//! (fixture: tools/parity/make_probe_fixtures.py).

mod common;

use burn::prelude::*;
use common::{Fixture, AD, B};
use exvit_probe::{fit_logreg, linear_cka, linear_cka_host, run_probe, standardize, Matrix, ProbeConfig};

const FIXTURE: &str = "tests/fixtures/probe/probe.safetensors";

fn dev() -> burn_flex::FlexDevice {
    burn_flex::FlexDevice
}

#[test]
fn standardisation_matches_the_fixture_and_gives_unit_columns() {
    let f = Fixture::load(FIXTURE);
    let (mut xt, mut xe) = (f.matrix("x_train"), f.matrix("x_eval"));
    standardize(&mut xt, &mut [&mut xe]);
    for (name, m) in [("std_train", &xt), ("std_eval", &xe)] {
        let want = f.matrix(name);
        let err = m.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "{name}: max diff {err}");
    }
    for c in 0..xt.cols {
        let col: Vec<f64> = (0..xt.rows).map(|r| f64::from(xt.row(r)[c])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "column {c}: mean {mean} var {var}");
    }
}

/// Both of the probe's paths: burn-flex takes the fused host kernels (`fast::xent_*`);
/// `Autodiff<Flex>`, like any other backend (the GPUs), takes burn tensor ops.
fn scikit_learn_optimum<P: Backend<Device = burn_flex::FlexDevice>>() {
    let f = Fixture::load(FIXTURE);
    let (xt, xe) = (f.matrix("std_train"), f.matrix("std_eval"));
    let (yt, ye) = (f.labels("y_train"), f.labels("y_eval"));
    let cfg = ProbeConfig { max_iter: 500, tol_grad: 1e-6, ..Default::default() };
    for i in 0..2 {
        let wd = f.f64(&format!("wd{i}.value"));
        let p = fit_logreg::<P>(&xt, &yt, 10, wd, None, &cfg, &dev()).unwrap();
        let want_obj = f.f64(&format!("wd{i}.objective"));
        assert!(
            (p.loss - want_obj).abs() / want_obj < 1e-4,
            "wd {wd}: objective {} vs scikit-learn {want_obj}",
            p.loss
        );
        // Same optimum: scikit-learn's coef_ is [K, D], ours [D, K].
        let (_, coef) = f.f32(&format!("wd{i}.coef"));
        let scale = coef.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut err = 0f32;
        for d in 0..24 {
            for k in 0..10 {
                err = err.max((p.weight.data[d * 10 + k] - coef[k * 24 + d]).abs());
            }
        }
        assert!(err / scale < 1e-3, "wd {wd}: coefficients differ by {err} (scale {scale})");
        let (top1, top5) = p.accuracy::<B>(&xe, &ye, &dev());
        let (w1, w5) = (f.f64(&format!("wd{i}.top1")), f.f64(&format!("wd{i}.top5")));
        assert!((top1 - w1).abs() <= 0.5, "wd {wd}: top-1 {top1} vs scikit-learn {w1}");
        assert!((top5 - w5).abs() <= 0.5, "wd {wd}: top-5 {top5} vs scikit-learn {w5}");
    }
}

#[test]
fn probe_matches_scikit_learn_at_fixed_weight_decay_with_host_kernels() {
    scikit_learn_optimum::<B>();
}

#[test]
fn probe_matches_scikit_learn_at_fixed_weight_decay_with_tensor_ops() {
    scikit_learn_optimum::<AD>();
}

#[test]
fn run_probe_selects_a_decay_and_lands_on_scikit_learns_accuracy() {
    let f = Fixture::load(FIXTURE);
    let (xt, xe) = (f.matrix("x_train"), f.matrix("x_eval"));
    let (yt, ye) = (f.labels("y_train"), f.labels("y_eval"));
    let cfg = ProbeConfig { wds: vec![1e-2, 1e-4], max_iter: 300, ..Default::default() };
    let r = run_probe::<B>(xt, &yt, xe, &ye, 10, &cfg, &dev()).unwrap();
    assert_eq!(r.selection.len(), 2);
    assert!(r.selection.iter().all(|(_, t)| (0.0..=100.0).contains(t)));
    let i = if r.wd == 1e-2 { 0 } else { 1 };
    assert_eq!(r.wd, f.f64(&format!("wd{i}.value")));
    let want = f.f64(&format!("wd{i}.top1"));
    assert!((r.top1 - want).abs() <= 0.5, "top-1 {} vs scikit-learn {want} at wd {}", r.top1, r.wd);
    assert_eq!((r.n_train, r.n_eval, r.dim), (1000, 500, 24));
}

/// Deterministic pseudo-random numbers for the known-answer tests.
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut r = exvit_data::rng::Rng::keyed(seed, &[1]);
    (0..n).map(|_| r.unit() as f32 * 2.0 - 1.0).collect()
}

#[test]
fn known_answers_separable_features_and_label_noise() {
    // Class c lights up feature c (plus noise): separable, so the probe is perfect.
    let (n, k, d) = (300, 6, 10);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % k as u32).collect();
    let nz = noise(1, n * d);
    let data: Vec<f32> =
        (0..n * d).map(|j| if j % d == labels[j / d] as usize { 3.0 } else { 0.0 } + 0.3 * nz[j]).collect();
    let x = Matrix::new(n, d, data);
    let cfg = ProbeConfig { wds: vec![1e-4], ..Default::default() };
    let r = run_probe::<B>(x.clone(), &labels, x.clone(), &labels, k, &cfg, &dev()).unwrap();
    assert_eq!(r.top1, 100.0);
    // Random features say nothing about the labels: chance on held-out images (1/6 ≈ 16.7%).
    let train = Matrix::new(n, d, noise(2, n * d));
    let eval = Matrix::new(n, d, noise(3, n * d));
    let r = run_probe::<B>(train, &labels, eval, &labels, k, &cfg, &dev()).unwrap();
    assert!(r.top1 < 30.0, "random features gave top-1 {}", r.top1);
    assert!(r.train_top1 > r.top1, "the probe should fit its own training set better than chance");
}

#[test]
fn bad_probe_input_is_refused_with_the_field_named() {
    let x = Matrix::new(4, 2, vec![0.0; 8]);
    let cfg = ProbeConfig::default();
    let e = fit_logreg::<B>(&x, &[0, 1, 2], 3, 1e-3, None, &cfg, &dev()).unwrap_err().to_string();
    assert!(e.contains("labels"), "{e}");
    let e = fit_logreg::<B>(&x, &[0, 1, 2, 7], 3, 1e-3, None, &cfg, &dev()).unwrap_err().to_string();
    assert!(e.contains("label 7"), "{e}");
    let cfg = ProbeConfig { wds: vec![-1.0], ..Default::default() };
    let e = run_probe::<B>(x.clone(), &[0, 1, 2, 0], x, &[0, 1, 2, 0], 3, &cfg, &dev()).unwrap_err().to_string();
    assert!(e.contains("--wd"), "{e}");
}

#[test]
fn cka_matches_numpy_and_has_its_invariances() {
    let f = Fixture::load(FIXTURE);
    let (a, b, c) = (f.matrix("cka.a"), f.matrix("cka.b"), f.matrix("cka.c"));
    for (x, y, key) in [(&a, &b, "cka.ab"), (&a, &c, "cka.ac"), (&b, &c, "cka.bc")] {
        let got = linear_cka_host::<B>(x, y, &dev()).unwrap();
        let want = f.f64(key);
        assert!((got - want).abs() < 1e-4, "{key}: {got} vs NumPy {want}");
        let sym = linear_cka_host::<B>(y, x, &dev()).unwrap();
        assert!((got - sym).abs() < 1e-5, "{key} is not symmetric");
    }
    assert!((linear_cka_host::<B>(&a, &a, &dev()).unwrap() - 1.0).abs() < 1e-5, "CKA(X, X) = 1");
    // An orthogonal transform and an isotropic scaling of one side leave CKA unchanged.
    let q = orthogonal(12, 5);
    let at = a.to_tensor::<B>(&dev());
    let rotated = at.clone().matmul(q).mul_scalar(7.5);
    let bt = b.to_tensor::<B>(&dev());
    let base = linear_cka(at.clone(), bt.clone());
    let moved = linear_cka(rotated.clone(), bt);
    assert!((base - moved).abs() < 1e-4, "orthogonal + scaling changed CKA: {base} → {moved}");
    assert!((linear_cka(at, rotated) - 1.0).abs() < 1e-4, "CKA(X, 7.5·XQ) = 1");
    // A non-isotropic scaling is not an invariance: it changes CKA (the test can fail).
    let mut skew = a.clone();
    for r in 0..skew.rows {
        skew.data[r * 12] *= 10.0;
    }
    let skewed = linear_cka_host::<B>(&skew, &b, &dev()).unwrap();
    assert!((skewed - base).abs() > 1e-3, "an anisotropic scaling left CKA at {skewed}");
    let e = linear_cka_host::<B>(&a, &Matrix::new(2, 12, vec![0.0; 24]), &dev()).unwrap_err().to_string();
    assert!(e.contains("300 rows against 2"), "{e}");
}

/// A random orthogonal `n x n` matrix (Gram–Schmidt of deterministic noise).
fn orthogonal(n: usize, seed: u64) -> Tensor<B, 2> {
    let v = noise(seed, n * n);
    let mut rows: Vec<Vec<f64>> = v.chunks(n).map(|r| r.iter().map(|&x| f64::from(x)).collect()).collect();
    for i in 0..n {
        let (done, rest) = rows.split_at_mut(i);
        let row = &mut rest[0];
        for prev in done.iter() {
            let dot: f64 = row.iter().zip(prev).map(|(a, b)| a * b).sum();
            row.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let flat: Vec<f32> = rows.into_iter().flatten().map(|x| x as f32).collect();
    Tensor::from_data(TensorData::new(flat, [n, n]), &dev())
}
