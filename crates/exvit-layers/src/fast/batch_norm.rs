//! Training-mode BatchNorm over `[N, C, H, W]` (batch statistics), fused on burn-flex (f32),
//! with its own gradient.
//!
//! burn's tensor ops compute it in six element-wise or reduction passes (sum, subtract,
//! square, sum, multiply, add), each allocating a tensor the size of the activation, and the
//! backward retraces all of them with broadcasts. BN follows every conv, on the largest tensors
//! of the network. Here the forward is two reads and one write (shifted sums, then the output)
//! and the backward two reads of `x` and `dy` and one write, per channel in parallel.
//!
//! With `silu` the activation that follows BN in a `ConvNormAct` is part of the op: the forward
//! writes `silu(bn(x))` in the output pass, and the backward recomputes `bn(x)` from `x` in its
//! first pass to apply the SiLU's gradient there. Separately, the SiLU would read and write the
//! activation once more each way, and keep BN's output alive as its own backward state.
//!
//! The reference is exvit's generic `BatchNorm2d::forward_train` (burn's tensor ops), which every
//! other backend uses; `tests/fast.rs` compares values and all three gradients and checks them by
//! finite differences.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::activation::{sigmoid1, silu1};
use super::gemm::Output;
use super::{back, cast, contiguous, float, is_f32, wrap, AdFlex};
use std::mem::MaybeUninit;

/// What the fused BN gives back: the output and the batch mean and biased variance per channel
/// (without gradient, for the running statistics).
pub struct BatchNormOutput<B: Backend> {
    /// `[N, C, H, W]` (after the SiLU, when asked for).
    pub y: Tensor<B, 4>,
    /// `[C]`.
    pub mean: Tensor<B, 1>,
    /// `[C]`, biased (divided by N·H·W).
    pub var: Tensor<B, 1>,
}

/// The inputs, given back when the backend has no fused BN: `x`, `gamma`, `beta`.
pub type BatchNormInputs<B> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>);

/// `(x − mean) / √(var + eps) · gamma + beta` with the batch's per-channel statistics, then
/// SiLU when `silu`, on burn-flex f32 (plain or autodiff); on other backends the inputs come
/// back (`Err`), for the generic path (BN, then the activation).
pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
    silu: bool,
) -> Result<BatchNormOutput<B>, BatchNormInputs<B>> {
    let device = x.device();
    let (px, pg, pb) = (float(x), float(gamma), float(beta));
    let stats = |mean: Vec<f32>, var: Vec<f32>| {
        let c = mean.len();
        (
            Tensor::<B, 1>::from_data(TensorData::new(mean, [c]), &device),
            Tensor::<B, 1>::from_data(TensorData::new(var, [c]), &device),
        )
    };
    let (px, pg, pb) = match (cast::<_, FlexTensor>(px), cast::<_, FlexTensor>(pg), cast::<_, FlexTensor>(pb)) {
        (Ok(x), Ok(g), Ok(b)) if is_f32(&x) && is_f32(&g) && is_f32(&b) => {
            let (y, st) = forward(&x, &g, &b, eps, silu);
            let (mean, var) = stats(st.mean, st.var);
            return Ok(BatchNormOutput { y: wrap::<B, 4, _>(y), mean, var });
        }
        (x, g, b) => (back(x), back(g), back(b)),
    };
    match (cast::<_, AdFlex>(px), cast::<_, AdFlex>(pg), cast::<_, AdFlex>(pb)) {
        (Ok(x), Ok(g), Ok(b)) if is_f32(&x.primitive) && is_f32(&g.primitive) && is_f32(&b.primitive) => {
            let (y, mean, var) = autodiff(x, g, b, eps, silu);
            let (mean, var) = stats(mean, var);
            Ok(BatchNormOutput { y: wrap::<B, 4, _>(y), mean, var })
        }
        (x, g, b) => Err((
            Tensor::from_primitive(TensorPrimitive::Float(back(x))),
            Tensor::from_primitive(TensorPrimitive::Float(back(g))),
            Tensor::from_primitive(TensorPrimitive::Float(back(b))),
        )),
    }
}

/// Per-channel batch statistics.
#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f32>,
    /// Biased variance.
    var: Vec<f32>,
    /// `1 / √(var + eps)`.
    inv_std: Vec<f32>,
}

/// `[N, C, H·W]` geometry of a flex tensor.
fn dims(x: &FlexTensor) -> (usize, usize, usize) {
    let s = x.layout().shape();
    (s[0], s[1], s[2] * s[3])
}

/// Lanes of the reductions (independent accumulators, so that they vectorise).
const LANES: usize = 16;

multiversion! {
    /// Σ v and Σ (v − m)² of a slice, in f64.
    fn sums(v: &[f32], m: f32, out: &mut [f64; 2]) {
        let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
        let ch = v.chunks_exact(LANES);
        let rem = ch.remainder();
        for c in ch {
            for l in 0..LANES {
                let d = c[l] - m;
                s[l] += d;
                q[l] += d * d;
            }
        }
        let mut ts: f64 = s.iter().map(|&x| x as f64).sum();
        let mut tq: f64 = q.iter().map(|&x| x as f64).sum();
        for &x in rem {
            let d = (x - m) as f64;
            ts += d;
            tq += d * d;
        }
        out[0] += ts;
        out[1] += tq;
    }
}

multiversion! {
    /// `o = (v − m)·a + b`.
    fn affine(o: &mut [MaybeUninit<f32>], v: &[f32], m: f32, a: f32, b: f32) {
        for (o, &v) in o.iter_mut().zip(v) {
            o.write((v - m) * a + b);
        }
    }
}

multiversion! {
    /// `o = silu((v − m)·a + b)`.
    fn affine_silu(o: &mut [MaybeUninit<f32>], v: &[f32], m: f32, a: f32, b: f32) {
        for (o, &v) in o.iter_mut().zip(v) {
            o.write(silu1((v - m) * a + b));
        }
    }
}

multiversion! {
    /// `o = g · silu'(y)` with `y = (v − m)·a + b` (the SiLU's gradient on BN's output,
    /// recomputed), and Σ o and Σ o·(v − m) in f64.
    fn silu_grad_sums(o: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32], m: f32, a: f32, b: f32, out: &mut [f64; 2]) {
        let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
        let (oc, gc, vc) = (o.chunks_exact_mut(LANES), g.chunks_exact(LANES), v.chunks_exact(LANES));
        let mut tail = (0.0f64, 0.0f64);
        let one = |g: f32, v: f32| {
            let y = (v - m) * a + b;
            let sg = sigmoid1(y);
            g * sg * (1.0 + y * (1.0 - sg))
        };
        let rem = gc.remainder().len();
        let n = g.len();
        for ((o, g), v) in oc.zip(gc).zip(vc) {
            for l in 0..LANES {
                let d = one(g[l], v[l]);
                o[l].write(d);
                s[l] += d;
                q[l] += d * (v[l] - m);
            }
        }
        for i in n - rem..n {
            let d = one(g[i], v[i]);
            o[i].write(d);
            tail.0 += d as f64;
            tail.1 += d as f64 * (v[i] - m) as f64;
        }
        out[0] += s.iter().map(|&x| x as f64).sum::<f64>() + tail.0;
        out[1] += q.iter().map(|&x| x as f64).sum::<f64>() + tail.1;
    }
}

multiversion! {
    /// `o = k·(o − a − (v − m)·b)`, in place ([`grad_input`] on a gradient already in `o`).
    fn grad_input_in_place(o: &mut [f32], v: &[f32], m: f32, k: f32, a: f32, b: f32) {
        for (o, &v) in o.iter_mut().zip(v) {
            *o = k * (*o - a - (v - m) * b);
        }
    }
}

multiversion! {
    /// Σ g and Σ g·(v − m), in f64.
    fn grad_sums(g: &[f32], v: &[f32], m: f32, out: &mut [f64; 2]) {
        let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
        let (gc, vc) = (g.chunks_exact(LANES), v.chunks_exact(LANES));
        let (gr, vr) = (gc.remainder(), vc.remainder());
        for (g, v) in gc.zip(vc) {
            for l in 0..LANES {
                s[l] += g[l];
                q[l] += g[l] * (v[l] - m);
            }
        }
        let mut ts: f64 = s.iter().map(|&x| x as f64).sum();
        let mut tq: f64 = q.iter().map(|&x| x as f64).sum();
        for (&g, &v) in gr.iter().zip(vr) {
            ts += g as f64;
            tq += g as f64 * (v - m) as f64;
        }
        out[0] += ts;
        out[1] += tq;
    }
}

multiversion! {
    /// `o = k·(g − a − (v − m)·b)`.
    fn grad_input(o: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32], m: f32, k: f32, a: f32, b: f32) {
        for ((o, &g), &v) in o.iter_mut().zip(g).zip(v) {
            o.write(k * (g - a - (v - m) * b));
        }
    }
}

/// The forward pass: `y` (after the SiLU, with `silu`) and the statistics.
fn forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64, silu: bool) -> (FlexTensor, Stats) {
    let (n, c, hw) = dims(x);
    let shape = x.layout().shape().clone();
    let (xc, gc, bc) = (contiguous(x), contiguous(gamma), contiguous(beta));
    let (xs, gs, bs) =
        (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"), bc.as_slice::<f32>().expect("f32"));
    let count = (n * hw) as f64;
    let mut y = Output::new(n * c * hw);
    let out = y.shared();
    let per_channel: Vec<(f32, f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane = |b: usize| &xs[(b * c + ch) * hw..(b * c + ch + 1) * hw];
            // One pass over data shifted by one of its own values (the shifted-data algorithm:
            // Σ(x − K) and Σ(x − K)² with K a sample of the channel stay of the order of the
            // spread, so var = E[(x−K)²] − E[x−K]² does not cancel catastrophically).
            let shift = plane(0)[0];
            let mut t = [0f64; 2];
            (0..n).for_each(|b| sums(plane(b), shift, &mut t));
            let (d, q) = (t[0] / count, t[1] / count);
            let mean = (shift as f64 + d) as f32;
            let var = (q - d * d).max(0.0);
            let inv_std = 1.0 / (var + eps).sqrt();
            let a = gs[ch] as f64 * inv_std;
            for b in 0..n {
                // SAFETY: the plane (b, ch) of y is written by this task only (uninitialised
                // until then: viewed as MaybeUninit).
                let o = unsafe { std::slice::from_raw_parts_mut(out.at((b * c + ch) * hw).cast(), hw) };
                if silu {
                    affine_silu(o, plane(b), mean, a as f32, bs[ch]);
                } else {
                    affine(o, plane(b), mean, a as f32, bs[ch]);
                }
            }
            (mean, var as f32, inv_std as f32)
        })
        .collect();
    let stats = Stats {
        mean: per_channel.iter().map(|p| p.0).collect(),
        var: per_channel.iter().map(|p| p.1).collect(),
        inv_std: per_channel.iter().map(|p| p.2).collect(),
    };
    // SAFETY: the tasks wrote every plane of y.
    (FlexTensor::from_data(TensorData::new(unsafe { y.assume_init() }, shape)), stats)
}

/// The gradients of `x`, `gamma` and `beta` from `dy`, the gradient of the op's output: BN's
/// output, or with `silu = Some(beta)` the SiLU's (BN's output is recomputed from `x`, `gamma`
/// and `beta` to apply the SiLU's gradient in the first pass, which writes it into `dx`; the
/// second pass turns it into BN's input gradient in place).
fn backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    silu: Option<&FlexTensor>,
    st: &Stats,
    dy: &FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (n, c, hw) = dims(x);
    let shape = x.layout().shape().clone();
    let (xc, gc, dc) = (contiguous(x), contiguous(gamma), contiguous(dy));
    let (xs, gs, ds) =
        (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"), dc.as_slice::<f32>().expect("f32"));
    let bc = silu.map(contiguous);
    let beta = bc.as_ref().map(|b| b.as_slice::<f32>().expect("f32"));
    let count = (n * hw) as f64;
    let mut dx = Output::new(n * c * hw);
    let out = dx.shared();
    let per_channel: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let at = |b: usize| (b * c + ch) * hw..(b * c + ch + 1) * hw;
            // SAFETY: the plane (b, ch) of dx is written by this task only (uninitialised
            // until then: viewed as MaybeUninit).
            let plane = |b: usize| unsafe {
                std::slice::from_raw_parts_mut(out.at(at(b).start).cast::<MaybeUninit<f32>>(), hw)
            };
            let m = st.mean[ch];
            let inv = st.inv_std[ch] as f64;
            let mut t = [0f64; 2];
            if let Some(beta) = beta {
                let a = (gs[ch] as f64 * inv) as f32;
                (0..n).for_each(|b| silu_grad_sums(plane(b), &ds[at(b)], &xs[at(b)], m, a, beta[ch], &mut t));
            } else {
                (0..n).for_each(|b| grad_sums(&ds[at(b)], &xs[at(b)], m, &mut t));
            }
            let (sum_dy, sum_dy_xc) = (t[0], t[1]);
            // dx = γ·inv/count · (count·dy − Σdy − x̂·Σdy·x̂), with x̂ = (x − m)·inv.
            let k = gs[ch] as f64 * inv;
            let a = sum_dy / count;
            let b2 = sum_dy_xc * inv * inv / count;
            for b in 0..n {
                if beta.is_some() {
                    // SAFETY: silu_grad_sums wrote every element of the plane.
                    let o = unsafe { super::gemm::init(plane(b)) };
                    grad_input_in_place(o, &xs[at(b)], m, k as f32, a as f32, b2 as f32);
                } else {
                    grad_input(plane(b), &ds[at(b)], &xs[at(b)], m, k as f32, a as f32, b2 as f32);
                }
            }
            ((sum_dy_xc * inv) as f32, sum_dy as f32)
        })
        .collect();
    let dgamma: Vec<f32> = per_channel.iter().map(|p| p.0).collect();
    let dbeta: Vec<f32> = per_channel.iter().map(|p| p.1).collect();
    (
        // SAFETY: the tasks wrote every plane of dx.
        FlexTensor::from_data(TensorData::new(unsafe { dx.assume_init() }, shape)),
        FlexTensor::from_data(TensorData::new(dgamma, [c])),
        FlexTensor::from_data(TensorData::new(dbeta, [c])),
    )
}

/// The autodiff op: parents `x`, `gamma`, `beta`; state `x`, `gamma`, the statistics and, with
/// `silu`, `beta` (to recompute BN's output in the backward).
fn autodiff(x: AdFlex, gamma: AdFlex, beta: AdFlex, eps: f64, silu: bool) -> (AdFlex, Vec<f32>, Vec<f32>) {
    #[derive(Debug)]
    struct BatchNormBackward;

    impl Backward<Flex, 3> for BatchNormBackward {
        type State = (FlexTensor, FlexTensor, Option<FlexTensor>, Stats);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, gamma, beta, st) = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let (dx, dgamma, dbeta) = backward(&x, &gamma, beta.as_ref(), &st, &dy);
            let [px, pg, pb] = ops.parents;
            for (parent, grad) in [(px, dx), (pg, dgamma), (pb, dbeta)] {
                if let Some(node) = parent {
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }

    let (y, st) = forward(&x.primitive, &gamma.primitive, &beta.primitive, eps, silu);
    let (mean, var) = (st.mean.clone(), st.var.clone());
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let y = match BatchNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, gamma.primitive, silu.then_some(beta.primitive), st), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (y, mean, var)
}
