//! L-BFGS with a strong-Wolfe line search that asks for gradients only where it stops.
//!
//! The algorithm is `torch.optim.LBFGS` (and `burn::optim::LBFGS`, its port) with
//! `line_search_fn="strong_wolfe"`: the same two-loop recursion, step-size rules, cubic
//! interpolation, bracketing and zoom, and the same stopping tests, so it visits the same
//! points. One thing differs: torch's line search computes the full gradient at every trial
//! step, though it only uses its dot product with the search direction there. This version
//! asks the objective for `f(x + t·d)` and `d·∇f(x + t·d)` at a trial ([`LineObjective::eval`])
//! and for the gradient only at the step it accepts ([`LineObjective::accept`]). For a linear
//! probe a trial then costs one pass over the logits instead of two matrix products
//! (exvit-probe's objective, docs/performance.md).

use burn::prelude::*;

/// An objective that L-BFGS explores along lines `x + t·d` from its current point `x`.
pub trait LineObjective<B: Backend> {
    /// The value and the flat gradient at the current point.
    fn current(&mut self) -> (f64, Tensor<B, 1>);
    /// Sets the search direction `d` (flat, the gradient's shape) for the next evaluations.
    fn set_direction(&mut self, d: &Tensor<B, 1>);
    /// `f(x + t·d)` and the directional derivative `d·∇f(x + t·d)`.
    fn eval(&mut self, t: f64) -> (f64, f64);
    /// Moves the current point to `x + t·d` (a step [`eval`](Self::eval) was given, or 0) and
    /// returns the gradient there.
    fn accept(&mut self, t: f64) -> Tensor<B, 1>;
}

/// Settings: those of `torch.optim.LBFGS`, with the strong-Wolfe line search.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsConfig {
    /// Iterations at most.
    pub max_iter: usize,
    /// Objective evaluations at most (torch's default: `max_iter · 5/4`).
    pub max_eval: usize,
    /// Pairs of steps and gradient changes kept.
    pub history: usize,
    /// Stop when the largest gradient entry is at most this.
    pub tol_grad: f64,
    /// Stop when the value or the step changes by less than this.
    pub tol_change: f64,
}

impl LbfgsConfig {
    /// torch's settings for `max_iter` iterations and `history` pairs.
    pub fn new(max_iter: usize, history: usize, tol_grad: f64, tol_change: f64) -> Self {
        LbfgsConfig { max_iter, max_eval: max_iter * 5 / 4, history, tol_grad, tol_change }
    }
}

/// What [`minimize`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsOutcome {
    /// The value at the final point.
    pub loss: f64,
    /// Objective evaluations: the start and every line-search trial.
    pub evals: usize,
    /// Gradients computed: the start and every accepted step.
    pub gradients: usize,
    /// Iterations.
    pub iterations: usize,
}

/// `a·b` of two f32 vectors, accumulated in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
}

fn abs_max(a: &[f32]) -> f64 {
    f64::from(a.iter().fold(0f32, |m, &v| m.max(v.abs())))
}

/// `a += c·b`.
fn axpy(a: &mut [f32], c: f64, b: &[f32]) {
    let c = c as f32;
    a.iter_mut().zip(b).for_each(|(a, &b)| *a += c * b);
}

fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 gradient")
}

/// Minimises `obj` from its current point; the point it ends at is the objective's.
///
/// The objective's values and gradients come from the backend; the bookkeeping of L-BFGS (the
/// history of `history` step and gradient-change pairs, the two-loop recursion) runs on host
/// copies of the flat vectors in plain loops, with dot products accumulated in `f64`: for the
/// probe's 641,000-entry vectors, ~60 burn tensor ops per iteration took ~23 ms on burn-flex
/// (2 threads), the loops ~3 ms, and on a GPU the gradient's 2.5 MB cross once per iteration.
pub fn minimize<B: Backend, O: LineObjective<B>>(obj: &mut O, cfg: &LbfgsConfig) -> LbfgsOutcome {
    let (mut loss, grad0) = obj.current();
    let device = grad0.device();
    let mut grad = host(grad0);
    let mut out = LbfgsOutcome { loss, evals: 1, gradients: 1, iterations: 0 };
    if abs_max(&grad) <= cfg.tol_grad {
        return out;
    }
    let mut history: Vec<(Vec<f32>, Vec<f32>, f64)> = Vec::new(); // (s, y, 1/(y·s))
    let mut d: Vec<f32> = grad.iter().map(|v| -v).collect();
    let mut t;
    let mut prev: Option<(Vec<f32>, f64)> = None; // the previous gradient and step
    while out.iterations < cfg.max_iter {
        out.iterations += 1;
        if let Some((g_prev, t_prev)) = prev.take() {
            let y: Vec<f32> = grad.iter().zip(&g_prev).map(|(g, p)| g - p).collect();
            let tp = t_prev as f32;
            let s: Vec<f32> = d.iter().map(|v| v * tp).collect();
            let ys = dot(&y, &s);
            if ys > 1e-10 {
                if history.len() == cfg.history {
                    history.remove(0);
                }
                history.push((s, y, 1.0 / ys));
            }
            // Two-loop recursion: d = −H·g.
            let mut q: Vec<f32> = grad.iter().map(|v| -v).collect();
            let mut alphas = vec![0.0; history.len()];
            for (i, (s, y, rho)) in history.iter().enumerate().rev() {
                alphas[i] = rho * dot(s, &q);
                axpy(&mut q, -alphas[i], y);
            }
            if let Some((s, y, _)) = history.last() {
                let gamma = (dot(y, s) / dot(y, y)) as f32;
                q.iter_mut().for_each(|v| *v *= gamma);
            }
            for ((s, y, rho), alpha) in history.iter().zip(&alphas) {
                let beta = rho * dot(y, &q);
                axpy(&mut q, alpha - beta, s);
            }
            d = q;
        }
        let g_prev = grad.clone();
        let loss_prev = loss;
        t = if out.iterations == 1 {
            (1.0 / grad.iter().map(|v| f64::from(v.abs())).sum::<f64>()).min(1.0)
        } else {
            1.0
        };
        let gtd = dot(&grad, &d);
        if gtd > -cfg.tol_change {
            break;
        }
        let d_max = abs_max(&d);
        obj.set_direction(&Tensor::from_data(TensorData::new(d.clone(), [d.len()]), &device));
        // As torch 2.x: the line search's own c1 1e-4, c2 0.9 and tolerance 1e-9 (not the
        // optimizer's tolerance), and the evaluations left as its budget.
        let budget = cfg.max_eval.saturating_sub(out.evals);
        let (f_new, t_new, evals) = strong_wolfe(obj, t, d_max, loss, gtd, 1e-4, 0.9, 1e-9, budget);
        out.evals += evals;
        loss = f_new;
        t = t_new;
        grad = host(obj.accept(t));
        out.gradients += 1;
        tracing::debug!(iteration = out.iterations, loss, step = t, evals = out.evals, "l-bfgs");
        prev = Some((g_prev, t));
        if out.evals >= cfg.max_eval
            || abs_max(&grad) <= cfg.tol_grad
            || d_max * t.abs() <= cfg.tol_change
            || (loss - loss_prev).abs() < cfg.tol_change
        {
            break;
        }
    }
    out.loss = loss;
    out
}

/// A trial of the line search: step, value, directional derivative.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    f: f64,
    gtd: f64,
}

/// Cubic interpolation of two points with their derivatives: the minimiser within `bounds`
/// (torch's `_cubic_interpolate`).
fn cubic_interpolate(a: Sample, b: Sample, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if a.t <= b.t { (a.t, b.t) } else { (b.t, a.t) });
    let d1 = a.gtd + b.gtd - 3.0 * (a.f - b.f) / (a.t - b.t);
    let d2_square = d1 * d1 - a.gtd * b.gtd;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if a.t <= b.t {
            b.t - (b.t - a.t) * ((b.gtd + d2 - d1) / (b.gtd - a.gtd + 2.0 * d2))
        } else {
            a.t - (a.t - b.t) * ((a.gtd + d2 - d1) / (a.gtd - b.gtd + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// torch's `_strong_wolfe` from value `f` and slope `gtd` at step 0: returns the step's value,
/// the step, and the evaluations made.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe<B: Backend, O: LineObjective<B>>(
    obj: &mut O,
    mut t: f64,
    d_norm: f64,
    f: f64,
    gtd: f64,
    c1: f64,
    c2: f64,
    tol_change: f64,
    max_ls: usize,
) -> (f64, f64, usize) {
    let (f_new, gtd_new) = obj.eval(t);
    let mut new = Sample { t, f: f_new, gtd: gtd_new };
    let mut evals = 1;
    let mut prev = Sample { t: 0.0, f, gtd };
    let mut ls_iter = 0;
    let mut bracket: Option<[Sample; 2]> = None;
    // Bracketing phase.
    while ls_iter < max_ls {
        if new.f > f + c1 * new.t * gtd || (ls_iter > 1 && new.f >= prev.f) {
            bracket = Some([prev, new]);
            break;
        }
        if new.gtd.abs() <= -c2 * gtd {
            return (new.f, new.t, evals);
        }
        if new.gtd >= 0.0 {
            bracket = Some([prev, new]);
            break;
        }
        let min_step = new.t + 0.01 * (new.t - prev.t);
        let max_step = new.t * 10.0;
        t = cubic_interpolate(prev, new, Some((min_step, max_step)));
        prev = new;
        let (f_new, gtd_new) = obj.eval(t);
        new = Sample { t, f: f_new, gtd: gtd_new };
        evals += 1;
        ls_iter += 1;
    }
    let mut bracket = bracket.unwrap_or([Sample { t: 0.0, f, gtd }, new]);
    // Zoom phase.
    let mut insuf_progress = false;
    let (mut low, mut high) = if bracket[0].f <= bracket[1].f { (0, 1) } else { (1, 0) };
    while ls_iter < max_ls {
        if (bracket[1].t - bracket[0].t).abs() * d_norm < tol_change {
            break;
        }
        t = cubic_interpolate(bracket[0], bracket[1], None);
        let (b_min, b_max) = (bracket[0].t.min(bracket[1].t), bracket[0].t.max(bracket[1].t));
        let eps = 0.1 * (b_max - b_min);
        if (b_max - t).min(t - b_min) < eps {
            if insuf_progress || t >= b_max || t <= b_min {
                t = if (t - b_max).abs() < (t - b_min).abs() { b_max - eps } else { b_min + eps };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        let (f_new, gtd_new) = obj.eval(t);
        let new = Sample { t, f: f_new, gtd: gtd_new };
        evals += 1;
        ls_iter += 1;
        if new.f > f + c1 * t * gtd || new.f >= bracket[low].f {
            bracket[high] = new;
            (low, high) = if bracket[0].f <= bracket[1].f { (0, 1) } else { (1, 0) };
        } else {
            if new.gtd.abs() <= -c2 * gtd {
                return (new.f, new.t, evals);
            }
            if new.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low];
            }
            bracket[low] = new;
        }
    }
    (bracket[low].f, bracket[low].t, evals)
}
