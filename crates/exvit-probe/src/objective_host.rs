//! The probe's objective on the CPU backend (burn-flex): the same function and line protocol
//! as [`crate::objective`], on host slices.
//!
//! Features, weights and logits stay host buffers for the whole fit: the point's logits `z`,
//! and one more `[n, k]` buffer that holds the direction's logits `zp = X·D + db` during a
//! line search (less the direction's bias `db`, which the passes add as they read) and
//! `dL/dlogits` after a step is accepted (`fast::xent_grad` overwrites the one
//! with the other). The two products go straight into them (`fast::matmul_nn`,
//! `fast::matmul_tn`): no tensor is built around a 200 MB matrix, none is allocated (and its
//! pages faulted in) per iteration, and the features are borrowed, not copied. Only the flat
//! `[d·k + k]` parameter vectors cross to burn tensors, for [`crate::lbfgs`].

use burn::prelude::*;
use exvit_layers::fast::{matmul_nn, matmul_tn, xent_grad, xent_line};

use crate::lbfgs::{dot, LineObjective};

/// `L(W, b) = mean_i CE(x_i·W + b, y_i) + wd/2 · ‖W‖²` at a point, on host buffers.
pub(crate) struct HostObjective<'a, B: Backend> {
    x: &'a [f32],
    labels: &'a [u32],
    n: usize,
    d: usize,
    k: usize,
    wd: f64,
    w: Vec<f32>,
    b: Vec<f32>,
    /// The point's logits `[n, k]`.
    z: Vec<f32>,
    /// The direction's logits while `dir` is set, else the logit gradient (`[n, k]`).
    buf: Vec<f32>,
    /// The direction `(D, db)`: set exactly while `buf` holds its logits.
    dir: Option<(Vec<f32>, Vec<f32>)>,
    /// `‖W‖²`, `W·D`, `‖D‖²` (the regulariser along the line).
    ww: f64,
    wd_dot: f64,
    dd: f64,
    device: B::Device,
}

/// `len` zeros, written (in parallel) rather than left to the allocator. `vec![0.0; len]`
/// takes fresh pages that the kernel maps to its shared zero page on the first read: the
/// logits of a zero start are read by the line search before anything writes them, and each
/// page's first write then copies it and flushes the TLB of every core running the process
/// (~50,000 such flushes for 200 MB of logits).
fn written(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len));
    v
}

impl<'a, B: Backend> HostObjective<'a, B> {
    /// The objective on row-major features `x` (`[labels.len(), d]`) at `(w, b)` (`[d, k]`,
    /// `[k]`); `zero` says that `w` and `b` are zeros (the logits are then zeros, no product).
    pub(crate) fn new(
        x: &'a [f32],
        labels: &'a [u32],
        wd: f64,
        w: Vec<f32>,
        b: Vec<f32>,
        zero: bool,
        device: &B::Device,
    ) -> Self {
        let (n, k) = (labels.len(), b.len());
        let d = w.len() / k.max(1);
        assert!(x.len() == n * d && w.len() == d * k, "probe objective: shapes disagree");
        let mut z = written(n * k);
        if !zero {
            matmul_nn(x, [n, d], &w, k, Some(&b), &mut z);
        }
        let ww = dot(&w, &w);
        HostObjective {
            x,
            labels,
            n,
            d,
            k,
            wd,
            w,
            b,
            z,
            buf: written(n * k),
            dir: None,
            ww,
            wd_dot: 0.0,
            dd: 0.0,
            device: device.clone(),
        }
    }

    /// The point's parameters `(W [d·k], b [k])`.
    pub(crate) fn into_params(self) -> (Vec<f32>, Vec<f32>) {
        (self.w, self.b)
    }

    /// Moves `z` by `t·(zp + db)` (when `step` is `(t, db)`), writes `dL/dlogits` into the
    /// buffer, and returns the value and the flat gradient `[dL/dW; dL/db]`. The direction
    /// (if any) must have been taken out of `dir` first: its logits are overwritten.
    fn value_and_grad(&mut self, step: Option<(f32, &[f32])>) -> (f64, Tensor<B, 1>) {
        debug_assert!(self.dir.is_none(), "the buffer is about to lose the direction's logits");
        let (n, d, k) = (self.n, self.d, self.k);
        let (nll, gb) = xent_grad(&mut self.z, step, &mut self.buf, self.labels, k, 1.0 / n as f32);
        let mut flat = vec![0f32; d * k + k];
        let (gw, tail) = flat.split_at_mut(d * k);
        matmul_tn(self.x, [n, d], &self.buf, k, gw);
        let wd = self.wd as f32;
        gw.iter_mut().zip(&self.w).for_each(|(g, &w)| *g += wd * w);
        tail.copy_from_slice(&gb);
        (nll / n as f64 + self.wd / 2.0 * self.ww, Tensor::from_data(TensorData::new(flat, [d * k + k]), &self.device))
    }
}

impl<B: Backend> LineObjective<B> for HostObjective<'_, B> {
    fn current(&mut self) -> (f64, Tensor<B, 1>) {
        self.dir = None;
        self.value_and_grad(None)
    }

    fn set_direction(&mut self, flat: &Tensor<B, 1>) {
        let (n, d, k) = (self.n, self.d, self.k);
        let mut dw = flat.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32 direction");
        let db = dw.split_off(d * k);
        matmul_nn(self.x, [n, d], &dw, k, None, &mut self.buf);
        self.wd_dot = dot(&self.w, &dw);
        self.dd = dot(&dw, &dw);
        self.dir = Some((dw, db));
    }

    fn eval(&mut self, t: f64) -> (f64, f64) {
        let db = &self.dir.as_ref().expect("a line trial needs a direction").1;
        let (nll, slope) = xent_line(&self.z, (&self.buf, db), t as f32, self.labels, self.k);
        let n = self.n as f64;
        let reg = self.wd / 2.0 * (self.ww + 2.0 * t * self.wd_dot + t * t * self.dd);
        let reg_slope = self.wd * (self.wd_dot + t * self.dd);
        (nll / n + reg, slope / n + reg_slope)
    }

    fn accept(&mut self, t: f64) -> Tensor<B, 1> {
        let (dw, db) = self.dir.take().expect("accepting a step needs a direction");
        let tf = t as f32;
        self.w.iter_mut().zip(&dw).for_each(|(w, &v)| *w += tf * v);
        self.b.iter_mut().zip(&db).for_each(|(b, &v)| *b += tf * v);
        self.ww = dot(&self.w, &self.w);
        self.value_and_grad(Some((tf, &db))).1
    }
}
