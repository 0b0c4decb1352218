//! exvit-probe's L-BFGS (gradients only at accepted steps) against `burn::optim::LBFGS` (full
//! gradients at every trial; the port of `torch.optim.LBFGS`): the same algorithm must visit the
//! same points, so both end at the same point after the same number of evaluations.

mod common;

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, LBFGSConfig, LineSearchFn};
use burn::prelude::*;
use common::AD;
use exvit_probe::lbfgs::{minimize, LbfgsConfig, LineObjective};

/// The extended Rosenbrock function in f64 and its gradient.
fn rosenbrock(x: &[f32]) -> (f64, Vec<f32>) {
    let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let (mut f, mut g) = (0.0, vec![0.0f64; x.len()]);
    for i in (0..x.len()).step_by(2) {
        let (a, b) = (x[i], x[i + 1]);
        f += 100.0 * (b - a * a).powi(2) + (1.0 - a).powi(2);
        g[i] += -400.0 * a * (b - a * a) - 2.0 * (1.0 - a);
        g[i + 1] += 200.0 * (b - a * a);
    }
    (f, g.into_iter().map(|v| v as f32).collect())
}

type F = burn_flex::Flex;

fn host(t: &Tensor<F, 1>) -> Vec<f32> {
    t.to_data().to_vec::<f32>().unwrap()
}

/// The objective through [`LineObjective`], evaluating the full gradient (the test needs no
/// shortcut: it checks the algorithm).
struct Rosen {
    x: Tensor<F, 1>,
    d: Option<Tensor<F, 1>>,
    evals: usize,
}

impl LineObjective<F> for Rosen {
    fn current(&mut self) -> (f64, Tensor<F, 1>) {
        self.evals += 1;
        let (f, g) = rosenbrock(&host(&self.x));
        (f, Tensor::from_floats(g.as_slice(), &self.x.device()))
    }

    fn set_direction(&mut self, d: &Tensor<F, 1>) {
        self.d = Some(d.clone());
    }

    fn eval(&mut self, t: f64) -> (f64, f64) {
        self.evals += 1;
        let d = self.d.clone().unwrap();
        let (f, g) = rosenbrock(&host(&(self.x.clone() + d.clone().mul_scalar(t))));
        // The slope as burn's port takes it: an f32 dot product of tensors.
        let g = Tensor::<F, 1>::from_floats(g.as_slice(), &d.device());
        (f, g.dot(d).into_scalar().elem::<f64>())
    }

    fn accept(&mut self, t: f64) -> Tensor<F, 1> {
        self.x = self.x.clone() + self.d.clone().unwrap().mul_scalar(t);
        let (_, g) = rosenbrock(&host(&self.x));
        Tensor::from_floats(g.as_slice(), &self.x.device())
    }
}

#[derive(Module, Debug)]
struct Point<B: Backend> {
    x: Param<Tensor<B, 1>>,
}

/// Both optimisers from `start` for `max_iter` iterations: (ours: outcome and point, burn's:
/// evaluations, loss and point).
#[allow(clippy::type_complexity)]
fn both(
    start: [f32; 6],
    max_iter: usize,
    history: usize,
) -> ((exvit_probe::lbfgs::LbfgsOutcome, Vec<f32>), (usize, f64, Vec<f32>)) {
    let dev = burn_flex::FlexDevice;
    let mut ours = Rosen { x: Tensor::from_floats(start, &dev), d: None, evals: 0 };
    let out = minimize(&mut ours, &LbfgsConfig::new(max_iter, history, 1e-7, 1e-9));
    assert_eq!(out.evals, ours.evals, "the outcome counts every evaluation");
    let mut burn_evals = 0;
    let mut opt = LBFGSConfig::new()
        .with_max_iter(max_iter)
        .with_history_size(history)
        .with_tolerance_grad(1e-7)
        .with_tolerance_change(1e-9)
        .with_line_search_fn(LineSearchFn::StrongWolfe)
        .init::<AD>();
    let point = Point::<AD> { x: Param::from_tensor(Tensor::from_floats(start, &dev)) };
    let (point, loss) = opt.step(1.0, point, |m: Point<AD>| {
        burn_evals += 1;
        let (f, g) = rosenbrock(&host(&m.x.val().inner()));
        let mut grads = GradientsParams::new();
        grads.register(m.x.id, Tensor::<F, 1>::from_floats(g.as_slice(), &dev));
        (f, grads)
    });
    ((out, host(&ours.x)), (burn_evals, loss, host(&point.x.val().inner())))
}

#[test]
fn same_points_and_evaluations_as_burns_lbfgs_on_rosenbrock() {
    // Rosenbrock's valley exercises the line search (bracketing, zoom, interpolation) at most
    // iterations. The two round differently (ours takes its scalars in f64, burn keeps them as
    // f32 tensors), and the valley amplifies rounding: the paths agree to f32 precision for the
    // first iterations, then drift apart slowly.
    let start = [-1.2f32, 1.0, -1.2, 1.0, 0.5, 0.3];
    for max_iter in 1..=10 {
        for history in [3, 10] {
            let ((out, mine), (evals, loss, theirs)) = both(start, max_iter, history);
            assert_eq!(out.evals, evals, "max_iter {max_iter}, history {history}: evaluations");
            assert!(
                (out.loss - loss).abs() <= 1e-5 * loss.abs().max(1.0),
                "max_iter {max_iter}, history {history}: loss {} vs {loss}",
                out.loss
            );
            for (a, b) in mine.iter().zip(&theirs) {
                assert!((a - b).abs() <= 1e-4, "max_iter {max_iter}, history {history}: {mine:?} vs {theirs:?}");
            }
        }
    }
    // Run to the end, both reach the minimum (1, …, 1) in about as many evaluations.
    let ((out, mine), (evals, loss, theirs)) = both(start, 200, 10);
    assert!(out.loss < 1e-8 && loss < 1e-8, "losses {} and {loss}", out.loss);
    assert!(mine.iter().chain(&theirs).all(|v| (v - 1.0).abs() < 1e-3), "{mine:?} {theirs:?}");
    assert!(out.evals.abs_diff(evals) <= evals / 5, "evaluations {} vs {evals}", out.evals);
}
