//! Multinomial logistic-regression probes.
//!
//! The probe minimises `mean_i CE(W·x_i + b, y_i) + wd/2 · ‖W‖²` (the bias is not decayed) on
//! standardised features: scikit-learn's `LogisticRegression(C)` objective with
//! `wd = 1 / (C · n_train)`. It is solved full-batch with L-BFGS and a strong-Wolfe line search
//! (`torch.optim.LBFGS`'s algorithm, [`crate::lbfgs`]), the objective and its gradient in closed
//! form and evaluated along each search direction from cached logits ([`crate::objective`]: a
//! line-search trial is one pass over the logits, not two matrix products; docs/performance.md).
//! Any backend: the probe needs no autodiff. Why L-BFGS rather than
//! minibatch AdamW: the problem is convex and smooth, so a quasi-Newton method reaches the
//! optimum itself in a few dozen to a few hundred full-batch passes, with no learning rate,
//! schedule or epoch count to tune per tap (each of which would be a confound when comparing
//! taps), deterministically, and to the same solution scikit-learn finds (tested). A full batch
//! of 1.28M × 640 `f32` features is 3.3 GB: in memory on a CPU machine or an H200.
//!
//! The weight decay is chosen on a held-out part of the training split (best held-out top-1,
//! ties to the stronger decay), then the probe is refit on the whole training split, warm
//! started, and evaluated once on the evaluation split.

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::error::ProbeError;
use crate::lbfgs::{minimize, LbfgsConfig};
use crate::matrix::Matrix;
use crate::objective::ProbeObjective;
use crate::objective_host::HostObjective;
use exvit_layers::fast::{host_backend, matmul_nn};

/// Settings of a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConfig {
    /// Weight decays to choose from (one value: no selection).
    pub wds: Vec<f64>,
    /// Share of the training split held out to choose the weight decay.
    pub holdout: f64,
    /// L-BFGS iterations per fit.
    pub max_iter: usize,
    /// L-BFGS history.
    pub history: usize,
    /// Stop when the largest gradient entry is below this.
    pub tol_grad: f64,
    /// Seed of the held-out split.
    pub seed: u64,
}

impl Default for ProbeConfig {
    /// `wd ∈ {1e-5, 1e-4, 1e-3, 1e-2}`, 10% held out, 200 iterations, history 10, tol 1e-5.
    fn default() -> Self {
        ProbeConfig {
            wds: vec![1e-5, 1e-4, 1e-3, 1e-2],
            holdout: 0.1,
            max_iter: 200,
            history: 10,
            tol_grad: 1e-5,
            seed: 0,
        }
    }
}

/// Standardises the columns of `train` to mean 0 and variance 1 with the training split's own
/// statistics (BatchNorm without affine in eval mode, as MAE's linear probe; eps 1e-6), and
/// applies the same map to `others`. Returns the `(mean, std)` used.
pub fn standardize(train: &mut Matrix, others: &mut [&mut Matrix]) -> (Vec<f32>, Vec<f32>) {
    let (n, d) = (train.rows, train.cols);
    let mut mean = vec![0f64; d];
    for r in 0..n {
        for (m, &v) in mean.iter_mut().zip(train.row(r)) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut var = vec![0f64; d];
    for r in 0..n {
        for ((s, &v), &m) in var.iter_mut().zip(train.row(r)).zip(&mean) {
            let dv = f64::from(v) - m;
            *s += dv * dv;
        }
    }
    let std: Vec<f32> = var.iter().map(|s| ((s / n.max(1) as f64) + 1e-6).sqrt() as f32).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let apply = |m: &mut Matrix| {
        assert_eq!(m.cols, d, "standardising a matrix of another width");
        for row in m.data.chunks_mut(d) {
            for ((v, &mu), &s) in row.iter_mut().zip(&mean).zip(&std) {
                *v = (*v - mu) / s;
            }
        }
    };
    apply(train);
    for o in others.iter_mut() {
        apply(o);
    }
    (mean, std)
}

/// A fitted probe, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    /// `[d, k]`, row-major.
    pub weight: Matrix,
    /// `[k]`.
    pub bias: Vec<f32>,
    /// Final objective value.
    pub loss: f64,
    /// Objective evaluations (each a full pass over the features, forward and backward).
    pub evals: usize,
}

impl LogReg {
    /// Zeros (the usual start: the objective is convex).
    pub fn zeros(d: usize, k: usize) -> LogReg {
        LogReg { weight: Matrix::new(d, k, vec![0.0; d * k]), bias: vec![0.0; k], loss: f64::NAN, evals: 0 }
    }

    /// Logits of `x` on `device`.
    pub fn logits<B: Backend>(&self, x: &Matrix, device: &B::Device) -> Tensor<B, 2> {
        let w = self.weight.to_tensor::<B>(device);
        let b = Tensor::<B, 1>::from_data(TensorData::new(self.bias.clone(), [self.bias.len()]), device);
        x.to_tensor::<B>(device).matmul(w) + b.unsqueeze::<2>()
    }

    /// Top-1 and top-5 accuracy (%) on `(x, y)`.
    ///
    /// The logits are computed [`ACCURACY_ROWS`] rows at a time (on burn-flex straight into
    /// one reused host buffer), so that scoring 50,000 rows of 1000 classes holds 16 MB of
    /// logits, not 200 MB and a copy of the features.
    pub fn accuracy<B: Backend>(&self, x: &Matrix, y: &[u32], device: &B::Device) -> (f64, f64) {
        use rayon::prelude::*;
        if y.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let (d, k) = (x.cols, self.bias.len());
        let host = host_backend::<B>();
        let mut buf = Vec::new();
        let (mut top1, mut top5) = (0usize, 0usize);
        for (xb, yb) in x.data.chunks(ACCURACY_ROWS * d.max(1)).zip(y.chunks(ACCURACY_ROWS)) {
            let logits = if host {
                buf.resize(yb.len() * k, 0.0);
                matmul_nn(xb, [yb.len(), d], &self.weight.data, k, Some(&self.bias), &mut buf);
                &buf
            } else {
                buf = self
                    .logits::<B>(&Matrix::new(yb.len(), d, xb.to_vec()), device)
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32");
                &buf
            };
            let (t1, t5) = logits
                .par_chunks(k)
                .zip(yb)
                .map(|(row, &label)| {
                    let (label, target) = (label as usize, row[label as usize]);
                    // Rank of the true class; a tie goes to the lower class index, as argmax
                    // does (so a probe whose logits are all equal scores chance, not 100%).
                    let above =
                        row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < label)).count();
                    (usize::from(above == 0), usize::from(above < 5))
                })
                .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            top1 += t1;
            top5 += t5;
        }
        (100.0 * top1 as f64 / y.len() as f64, 100.0 * top5 as f64 / y.len() as f64)
    }
}

/// Rows scored at a time by [`LogReg::accuracy`].
const ACCURACY_ROWS: usize = 4096;

/// Fits a probe with weight decay `wd` on `(x, y)` (`classes` classes), from `init` or zeros.
///
/// L-BFGS as `torch.optim.LBFGS` (strong Wolfe, history `cfg.history`), with the objective
/// evaluated along each search direction from cached logits ([`crate::lbfgs`],
/// [`crate::objective`]): two `n·d·k` matrix products per iteration instead of two per
/// evaluation.
pub fn fit_logreg<B: Backend>(
    x: &Matrix,
    y: &[u32],
    classes: usize,
    wd: f64,
    init: Option<&LogReg>,
    cfg: &ProbeConfig,
    device: &B::Device,
) -> Result<LogReg, ProbeError> {
    if x.rows != y.len() || x.rows == 0 {
        return Err(ProbeError::Config(format!(
            "a probe needs as many labels as rows ({} rows, {} labels)",
            x.rows,
            y.len()
        )));
    }
    if let Some(&bad) = y.iter().find(|&&l| l as usize >= classes) {
        return Err(ProbeError::Config(format!("label {bad} is out of range for {classes} classes")));
    }
    let (d, k) = (x.cols, classes);
    let start = init.cloned().unwrap_or_else(|| LogReg::zeros(d, k));
    let zero = start.weight.data.iter().chain(&start.bias).all(|&v| v == 0.0);
    let lbfgs = LbfgsConfig::new(cfg.max_iter, cfg.history, cfg.tol_grad, 1e-10);
    let (out, w, b) = if host_backend::<B>() {
        let mut objective =
            HostObjective::<B>::new(&x.data, y, wd, start.weight.data.clone(), start.bias.clone(), zero, device);
        let out = minimize(&mut objective, &lbfgs);
        let (w, b) = objective.into_params();
        (out, w, b)
    } else {
        let mut objective = ProbeObjective::<B>::new(
            x.to_tensor::<B>(device),
            y,
            wd,
            start.weight.to_tensor::<B>(device),
            Tensor::from_data(TensorData::new(start.bias.clone(), [k]), device),
            zero,
        );
        let out = minimize(&mut objective, &lbfgs);
        let (w, b) = objective.into_params();
        let w = w.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        let b = b.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
        (out, w, b)
    };
    let loss = out.loss;
    if !loss.is_finite() {
        return Err(ProbeError::Config(format!("the probe diverged (loss {loss}); are the features finite?")));
    }
    tracing::debug!(
        wd,
        loss,
        evals = out.evals,
        iterations = out.iterations,
        gradients = out.gradients,
        rows = x.rows,
        dim = d,
        classes = k,
        "probe fitted"
    );
    Ok(LogReg { weight: Matrix::new(d, k, w), bias: b, loss, evals: out.evals })
}

/// The outcome of [`run_probe`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    /// The chosen weight decay.
    pub wd: f64,
    /// Held-out top-1 (%) of each candidate, `(wd, top1)` (empty without selection).
    pub selection: Vec<(f64, f64)>,
    /// Top-1 (%) on the evaluation split.
    pub top1: f64,
    /// Top-5 (%) on the evaluation split.
    pub top5: f64,
    /// Top-1 (%) on the training split (of the refit probe).
    pub train_top1: f64,
    /// Training images.
    pub n_train: usize,
    /// Evaluation images.
    pub n_eval: usize,
    /// Feature width.
    pub dim: usize,
    /// Wall time, selection included.
    pub seconds: f64,
}

/// Standardises, chooses the weight decay on a held-out part of `train`, refits on all of it,
/// and evaluates on `eval`.
pub fn run_probe<B: Backend>(
    mut train: Matrix,
    train_y: &[u32],
    mut eval: Matrix,
    eval_y: &[u32],
    classes: usize,
    cfg: &ProbeConfig,
    device: &B::Device,
) -> Result<ProbeResult, ProbeError> {
    let started = Instant::now();
    if cfg.wds.is_empty() || cfg.wds.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        return Err(ProbeError::Config(format!("--wd: one or more finite values ≥ 0, not {:?}", cfg.wds)));
    }
    if train.cols != eval.cols {
        return Err(ProbeError::Config(format!("train features are {} wide, eval features {}", train.cols, eval.cols)));
    }
    standardize(&mut train, &mut [&mut eval]);
    let mut selection = Vec::new();
    let mut init: Option<LogReg> = None;
    let wd = if cfg.wds.len() == 1 {
        cfg.wds[0]
    } else {
        if !(cfg.holdout > 0.0 && cfg.holdout < 1.0) {
            return Err(ProbeError::Config(format!("--holdout must be in (0, 1), not {}", cfg.holdout)));
        }
        let mut order: Vec<usize> = (0..train.rows).collect();
        exvit_data::rng::Rng::keyed(cfg.seed, &[0x5052_4f42]).shuffle(&mut order);
        let n_hold = ((train.rows as f64 * cfg.holdout).round() as usize).clamp(1, train.rows - 1);
        let (hold, fit) = order.split_at(n_hold);
        let (xf, xh) = (train.select_rows(fit), train.select_rows(hold));
        let yf: Vec<u32> = fit.iter().map(|&i| train_y[i]).collect();
        let yh: Vec<u32> = hold.iter().map(|&i| train_y[i]).collect();
        // From the strongest decay to the weakest, each fit warm-started from the previous one.
        let mut wds = cfg.wds.clone();
        wds.sort_by(|a, b| b.total_cmp(a));
        let mut best: Option<(f64, f64, LogReg)> = None;
        for &wd in &wds {
            let p = fit_logreg::<B>(&xf, &yf, classes, wd, init.as_ref(), cfg, device)?;
            let (top1, _) = p.accuracy::<B>(&xh, &yh, device);
            tracing::debug!(wd, top1, loss = p.loss, "held-out");
            selection.push((wd, top1));
            if best.as_ref().is_none_or(|(_, t, _)| top1 > *t) {
                best = Some((wd, top1, p.clone()));
            }
            init = Some(p);
        }
        let (wd, _, p) = best.expect("at least one weight decay");
        init = Some(p);
        wd
    };
    let p = fit_logreg::<B>(&train, train_y, classes, wd, init.as_ref(), cfg, device)?;
    let (top1, top5) = p.accuracy::<B>(&eval, eval_y, device);
    let (train_top1, _) = p.accuracy::<B>(&train, train_y, device);
    Ok(ProbeResult {
        wd,
        selection,
        top1,
        top5,
        train_top1,
        n_train: train.rows,
        n_eval: eval.rows,
        dim: train.cols,
        seconds: started.elapsed().as_secs_f64(),
    })
}
