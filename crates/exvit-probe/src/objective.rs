//! The linear probe's objective, evaluated along lines for [`crate::lbfgs`].
//!
//! `L(W, b) = mean_i CE(x_i·W + b, y_i) + wd/2 · ‖W‖²`. The point keeps its logits
//! `z = X·W + b`; a search direction `(D, db)` gets its own, `zp = X·D + db` (one matrix
//! product). A trial step `t` then needs only `z + t·zp`, and the regulariser is a quadratic in
//! `t` from three dot products. Accepting a step moves `z` by `t·zp` and computes the gradient,
//! `dL/dW = Xᵀ·G + wd·W` with `G = (softmax − onehot)/n`, and `dL/db = Σ_i G_i` (the second
//! matrix product). Two matrix products per iteration, whatever the line search tries.
//!
//! This is the path of every backend but the CPU's, in burn tensor ops; on burn-flex
//! [`crate::objective_host`] computes the same values on host buffers with fused kernels
//! (tested against each other and against scikit-learn).

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::lbfgs::LineObjective;

/// The probe's objective at a point `(W, b)`, with the logits of the point and of the direction.
pub(crate) struct ProbeObjective<B: Backend> {
    x: Tensor<B, 2>,
    labels_t: Tensor<B, 2, Int>,
    wd: f64,
    w: Tensor<B, 2>,
    b: Tensor<B, 1>,
    z: Tensor<B, 2>,
    /// The direction `(D, db)` and its logits.
    dir: Option<(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 2>)>,
    /// `‖W‖²`, `W·D`, `‖D‖²` (the regulariser along the line).
    ww: f64,
    wd_dot: f64,
    dd: f64,
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
        let z = if zero {
            Tensor::zeros([n, k], &device)
        } else {
            x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>()
        };
        let labels_t = Tensor::<B, 2, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), [n, 1]),
            &device,
        );
        let ww = sum_sq(&w);
        ProbeObjective { x, labels_t, wd, w, b, z, dir: None, ww, wd_dot: 0.0, dd: 0.0 }
    }

    /// The point's parameters.
    pub(crate) fn into_params(self) -> (Tensor<B, 2>, Tensor<B, 1>) {
        (self.w, self.b)
    }

    fn n(&self) -> usize {
        self.z.dims()[0]
    }

    fn k(&self) -> usize {
        self.b.dims()[0]
    }

    /// `G = (softmax(z) − onehot)/n` after moving `z` by `t·zp` (when `step`), and the mean
    /// cross-entropy there.
    fn logit_grad(&mut self, step: Option<f64>) -> (Tensor<B, 2>, f64) {
        let n = self.n();
        let device = self.x.device();
        if let Some(t) = step {
            let zp = &self.dir.as_ref().expect("a direction is set").2;
            self.z = self.z.clone() + zp.clone().mul_scalar(t);
        }
        let z = &self.z;
        let shifted = z.clone() - z.clone().max_dim(1);
        let exp = shifted.clone().exp();
        let sum = exp.clone().sum_dim(1);
        let nll = (sum.clone().log() - shifted.gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
        let minus_one = Tensor::<B, 2>::full([n, 1], -1.0, &device);
        let g = (exp / sum).scatter(1, self.labels_t.clone(), minus_one, IndexingUpdateOp::Add).div_scalar(n as f64);
        (g, nll / n as f64)
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
        let zp = self.x.clone().matmul(dw.clone()) + db.clone().unsqueeze::<2>();
        self.wd_dot = (self.w.clone() * dw.clone()).sum().into_scalar().elem::<f64>();
        self.dd = sum_sq(&dw);
        self.dir = Some((dw, db, zp));
    }

    fn eval(&mut self, t: f64) -> (f64, f64) {
        let n = self.n();
        let zp = &self.dir.as_ref().expect("a direction is set").2;
        let l = self.z.clone() + zp.clone().mul_scalar(t);
        let m = l.clone().max_dim(1);
        let e = (l.clone() - m.clone()).exp();
        let s = e.clone().sum_dim(1);
        let nll = (s.clone().log() + m - l.gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
        let dot = (e * zp.clone()).sum_dim(1) / s;
        let slope = (dot - zp.clone().gather(1, self.labels_t.clone())).sum().into_scalar().elem::<f64>();
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
