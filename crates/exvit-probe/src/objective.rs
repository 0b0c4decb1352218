//! The linear probe's objective, evaluated along lines for [`crate::lbfgs`].
//!
//! `L(W, b) = mean_i CE(x_i·W + b, y_i) + wd/2 · ‖W‖²`. The point keeps its logits
//! `z = X·W + b`; a search direction `(D, db)` gets its own, `zp = X·D + db` (one matrix
//! product). A trial step `t` then needs only `z + t·zp`, and the regulariser is a quadratic in
//! `t` from three dot products. Accepting a step moves `z` by `t·zp` and computes the gradient,
//! `dL/dW = Xᵀ·G + wd·W` with `G = (softmax − onehot)/n`, and `dL/db = Σ_i G_i` (the second
//! matrix product). Two matrix products per iteration, whatever the line search tries.
//!
//! On the CPU backend (burn-flex) the passes over the logits are fused host kernels
//! (`exvit_layers::fast::{xent_line, xent_grad}`); elsewhere they are burn tensor ops. The
//! two paths compute the same values (tested).

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use exvit_layers::fast::{host_backend, xent_grad, xent_line};

use crate::lbfgs::LineObjective;

/// Logits `[n, k]`: host memory on burn-flex (the fused kernels' input), a tensor elsewhere.
enum Logits<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 2>),
}

impl<B: Backend> Logits<B> {
    /// From a tensor (on burn-flex the buffer moves to the host without a copy when unique).
    fn of(t: Tensor<B, 2>, host: bool) -> Self {
        if host {
            Logits::Host(t.into_data().into_vec::<f32>().expect("f32 logits"))
        } else {
            Logits::Device(t)
        }
    }
}

/// The probe's objective at a point `(W, b)`, with the logits of the point and of the direction.
pub(crate) struct ProbeObjective<B: Backend> {
    x: Tensor<B, 2>,
    labels: Vec<u32>,
    labels_t: Tensor<B, 2, Int>,
    wd: f64,
    w: Tensor<B, 2>,
    b: Tensor<B, 1>,
    z: Logits<B>,
    /// The direction `(D, db)` and its logits.
    dir: Option<(Tensor<B, 2>, Tensor<B, 1>, Logits<B>)>,
    /// `‖W‖²`, `W·D`, `‖D‖²` (the regulariser along the line).
    ww: f64,
    wd_dot: f64,
    dd: f64,
    host: bool,
}

fn sum_sq<B: Backend, const D: usize>(t: &Tensor<B, D>) -> f64 {
    t.clone().powf_scalar(2.0).sum().into_scalar().elem::<f64>()
}

impl<B: Backend> ProbeObjective<B> {
    /// The objective on features `x` (`[n, d]`) with `labels`, at `(w, b)`; `zero` says that
    /// `w` and `b` are zeros (the logits are then zeros, with no product).
    pub(crate) fn new(x: Tensor<B, 2>, labels: &[u32], wd: f64, w: Tensor<B, 2>, b: Tensor<B, 1>, zero: bool) -> Self {
        let device = x.device();
        let [n, _] = x.dims();
        let k = b.dims()[0];
        let host = host_backend::<B>();
        let z = if zero && host {
            Logits::Host(vec![0.0; n * k])
        } else if zero {
            Logits::Device(Tensor::zeros([n, k], &device))
        } else {
            Logits::of(x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>(), host)
        };
        let labels_t = Tensor::<B, 2, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), [n, 1]),
            &device,
        );
        let ww = sum_sq(&w);
        ProbeObjective { x, labels: labels.to_vec(), labels_t, wd, w, b, z, dir: None, ww, wd_dot: 0.0, dd: 0.0, host }
    }

    /// The point's parameters.
    pub(crate) fn into_params(self) -> (Tensor<B, 2>, Tensor<B, 1>) {
        (self.w, self.b)
    }

    fn n(&self) -> usize {
        self.labels.len()
    }

    fn k(&self) -> usize {
        self.b.dims()[0]
    }

    /// `G = (softmax(z) − onehot)/n` after moving `z` by `t·zp` (when `step`), and the mean
    /// cross-entropy there.
    fn logit_grad(&mut self, step: Option<f64>) -> (Tensor<B, 2>, f64) {
        let (n, k) = (self.n(), self.k());
        let device = self.x.device();
        let zp = step.map(|t| (&self.dir.as_ref().expect("a direction is set").2, t));
        match (&mut self.z, zp) {
            (Logits::Host(z), zp) => {
                let zp = match zp {
                    Some((Logits::Host(zp), t)) => Some((zp.as_slice(), t as f32)),
                    None => None,
                    Some((Logits::Device(_), _)) => unreachable!("one kind of logits per objective"),
                };
                let (g, nll) = xent_grad(z, zp, &self.labels, k, 1.0 / n as f32);
                (Tensor::from_data(TensorData::new(g, [n, k]), &device), nll / n as f64)
            }
            (Logits::Device(z), zp) => {
                if let Some((zp, t)) = zp {
                    let Logits::Device(zp) = zp else { unreachable!("one kind of logits per objective") };
                    *z = z.clone() + zp.clone().mul_scalar(t);
                }
                let shifted = z.clone() - z.clone().max_dim(1);
                let exp = shifted.clone().exp();
                let sum = exp.clone().sum_dim(1);
                let nll =
                    (sum.clone().log() - shifted.gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
                let minus_one = Tensor::<B, 2>::full([n, 1], -1.0, &device);
                let g = (exp / sum)
                    .scatter(1, self.labels_t.clone(), minus_one, IndexingUpdateOp::Add)
                    .div_scalar(n as f64);
                (g, nll / n as f64)
            }
        }
    }

    /// The value and flat gradient from `G` (`dL/dlogits`) and the mean cross-entropy.
    fn value_and_grad(&self, g: Tensor<B, 2>, nll: f64) -> (f64, Tensor<B, 1>) {
        let k = self.k();
        let d = self.w.dims()[0];
        let gw = self.x.clone().transpose().matmul(g.clone()) + self.w.clone().mul_scalar(self.wd);
        let gb = g.sum_dim(0).reshape([k]);
        (nll + self.wd / 2.0 * self.ww, Tensor::cat(vec![gw.reshape([d * k]), gb], 0))
    }
}

impl<B: Backend> LineObjective<B> for ProbeObjective<B> {
    fn current(&mut self) -> (f64, Tensor<B, 1>) {
        let (g, nll) = self.logit_grad(None);
        self.value_and_grad(g, nll)
    }

    fn set_direction(&mut self, flat: &Tensor<B, 1>) {
        let (d, k) = (self.w.dims()[0], self.k());
        let dw = flat.clone().slice(0..d * k).reshape([d, k]);
        let db = flat.clone().slice(d * k..d * k + k);
        self.dir = None; // frees the previous direction's logits before the product
        let zp = Logits::of(self.x.clone().matmul(dw.clone()) + db.clone().unsqueeze::<2>(), self.host);
        self.wd_dot = (self.w.clone() * dw.clone()).sum().into_scalar().elem::<f64>();
        self.dd = sum_sq(&dw);
        self.dir = Some((dw, db, zp));
    }

    fn eval(&mut self, t: f64) -> (f64, f64) {
        let (n, k) = (self.n(), self.k());
        let zp = &self.dir.as_ref().expect("a direction is set").2;
        let (nll, slope) = match (&self.z, zp) {
            (Logits::Host(z), Logits::Host(zp)) => xent_line(z, zp, t as f32, &self.labels, k),
            (Logits::Device(z), Logits::Device(zp)) => {
                let l = z.clone() + zp.clone().mul_scalar(t);
                let m = l.clone().max_dim(1);
                let e = (l.clone() - m.clone()).exp();
                let s = e.clone().sum_dim(1);
                let nll = (s.clone().log() + m - l.gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
                let dot = (e * zp.clone()).sum_dim(1) / s;
                let slope = (dot - zp.clone().gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
                (nll, slope)
            }
            _ => unreachable!("one kind of logits per objective"),
        };
        let reg = self.wd / 2.0 * (self.ww + 2.0 * t * self.wd_dot + t * t * self.dd);
        let reg_slope = self.wd * (self.wd_dot + t * self.dd);
        (nll / n as f64 + reg, slope / n as f64 + reg_slope)
    }

    fn accept(&mut self, t: f64) -> Tensor<B, 1> {
        let (g, nll) = self.logit_grad(Some(t));
        let (dw, db, _) = self.dir.as_ref().expect("a direction is set");
        self.w = self.w.clone() + dw.clone().mul_scalar(t);
        self.b = self.b.clone() + db.clone().mul_scalar(t);
        self.ww = sum_sq(&self.w);
        self.value_and_grad(g, nll).1
    }
}
