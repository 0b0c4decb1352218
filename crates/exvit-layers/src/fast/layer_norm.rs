//! LayerNorm over the last dimension on burn-flex (f32), fused, with its own gradient.
//!
//! burn's tensor ops run it as a mean, a variance, a subtraction, a square root, a division and
//! the affine map (each a pass over the activation that allocates one), and the backward
//! retraces them with broadcasts and sums: in a mobilevit_xxs train step at batch 16 (1 thread)
//! its forward alone was ~3% of the step's samples, and most of the backward's generic ops came
//! from it, ~100 ms a step against PyTorch's 16 (docs/performance.md, step 10). Here a task takes a block of rows: per row, the
//! mean and the variance (two passes over a row in cache), then the output; the backward is
//! one pass per row, with the γ and β gradients summed per block.
//!
//! The reference is `LayerNorm::forward_generic` (burn's ops), which every other backend uses;
//! `tests/fast.rs` compares values and all three gradients and checks them by finite
//! differences.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::gemm::Output;
use super::{back, cast, contiguous, float, is_f32, sum_in_order, wrap, AdFlex};
use std::mem::MaybeUninit;

/// The inputs, given back when the backend has no fused LayerNorm: `x`, `weight`, `bias`.
pub type LayerNormInputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>);

/// `(x − mean) / √(var + eps) · weight + bias` over the last dimension (biased variance, as
/// `torch.nn.LayerNorm`), on burn-flex f32 (plain or autodiff); on other backends and dtypes the
/// inputs come back (`Err`), for the generic path.
///
/// # Example
/// ```
/// use burn::prelude::*;
/// use burn_flex::Flex;
/// use exvit_layers::fast::layer_norm;
///
/// let dev = Default::default();
/// let x = Tensor::<Flex, 2>::from_floats([[1.0, 3.0]], &dev);
/// let (w, b) = (Tensor::<Flex, 1>::from_floats([2.0, 1.0], &dev), Tensor::<Flex, 1>::zeros([2], &dev));
/// let y = layer_norm(x, w, b, 0.0).unwrap_or_else(|_| unreachable!("fused on flex f32"));
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![-2.0, 1.0]);
/// ```
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, D>, LayerNormInputs<B, D>> {
    let dim = x.dims()[D - 1];
    assert_eq!(weight.dims()[0], dim, "layer_norm: a weight of {} for {dim} features", weight.dims()[0]);
    assert_eq!(bias.dims()[0], dim, "layer_norm: a bias of {} for {dim} features", bias.dims()[0]);
    let (px, pg, pb) = (float(x), float(weight), float(bias));
    let (px, pg, pb) = match (cast::<_, FlexTensor>(px), cast::<_, FlexTensor>(pg), cast::<_, FlexTensor>(pb)) {
        (Ok(x), Ok(g), Ok(b)) if is_f32(&x) && is_f32(&g) && is_f32(&b) => {
            return Ok(wrap::<B, D, _>(forward(&x, &g, &b, eps).0));
        }
        (x, g, b) => (back(x), back(g), back(b)),
    };
    match (cast::<_, AdFlex>(px), cast::<_, AdFlex>(pg), cast::<_, AdFlex>(pb)) {
        (Ok(x), Ok(g), Ok(b)) if is_f32(&x.primitive) && is_f32(&g.primitive) && is_f32(&b.primitive) => {
            Ok(wrap::<B, D, _>(autodiff(x, g, b, eps)))
        }
        (x, g, b) => Err((
            Tensor::from_primitive(TensorPrimitive::Float(back(x))),
            Tensor::from_primitive(TensorPrimitive::Float(back(g))),
            Tensor::from_primitive(TensorPrimitive::Float(back(b))),
        )),
    }
}

/// Rows per task.
const ROWS: usize = 256;
/// Lanes of the row sums (independent accumulators, so that they vectorise).
const LANES: usize = 16;

/// Σ of `v`'s elements, in [`LANES`] lanes.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = v.len() / LANES * LANES;
    for j0 in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j0 + l);
        }
    }
    acc.iter().sum::<f32>() + (full..v.len()).map(f).sum::<f32>()
}

multiversion! {
    /// A block of rows (`x`, `y` `[rows, C]`): `y`, and each row's mean and `1/√(var + eps)`.
    fn forward_rows(y: &mut [MaybeUninit<f32>], x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, stats: &mut [(f32, f32)]) {
        let c = gamma.len();
        for ((yr, xr), st) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(stats.iter_mut()) {
            let mean = lane_sum(xr, |j| xr[j]) / c as f32;
            let var = lane_sum(xr, |j| (xr[j] - mean) * (xr[j] - mean)) / c as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                o.write((v - mean) * rstd * g + b);
            }
            *st = (mean, rstd);
        }
    }
}

multiversion! {
    /// A block of rows of the backward: `dx`, and the block's sums `dγ += dy·x̂`, `dβ += dy`.
    fn backward_rows(dx: &mut [MaybeUninit<f32>], dy: &[f32], x: &[f32], gamma: &[f32], stats: &[(f32, f32)], dgamma: &mut [f32], dbeta: &mut [f32]) {
        let c = gamma.len();
        let inv_c = 1.0 / c as f32;
        for (((dxr, dyr), xr), &(mean, rstd)) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)).zip(stats) {
            // With x̂ = (x − mean)·rstd and g = dy·γ: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
            let s1 = lane_sum(dyr, |j| dyr[j] * gamma[j]) * inv_c;
            let s2 = lane_sum(dyr, |j| dyr[j] * gamma[j] * (xr[j] - mean) * rstd) * inv_c;
            for j in 0..c {
                let xh = (xr[j] - mean) * rstd;
                dxr[j].write(rstd * (dyr[j] * gamma[j] - s1 - xh * s2));
                dgamma[j] += dyr[j] * xh;
                dbeta[j] += dyr[j];
            }
        }
    }
}

/// The forward pass: `y` and each row's `(mean, rstd)`.
fn forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, eps: f64) -> (FlexTensor, Vec<(f32, f32)>) {
    let shape = x.layout().shape().clone();
    let (xc, gc, bc) = (contiguous(x), contiguous(gamma), contiguous(beta));
    let (xs, gs, bs) =
        (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"), bc.as_slice::<f32>().expect("f32"));
    let c = gs.len();
    let mut y = Output::new(xs.len());
    let mut stats = vec![(0f32, 0f32); xs.len().checked_div(c).unwrap_or(0)];
    // (`c.max(1)`: with no features there are no elements, and no blocks.)
    y.chunks(ROWS * c.max(1)).zip(stats.par_chunks_mut(ROWS)).enumerate().for_each(|(blk, (yb, st))| {
        forward_rows(yb, &xs[blk * ROWS * c..][..yb.len()], gs, bs, eps as f32, st);
    });
    // SAFETY: the blocks cover y, each row written by `forward_rows`.
    (FlexTensor::from_data(TensorData::new(unsafe { y.assume_init() }, shape)), stats)
}

/// The gradients of `x`, `gamma` and `beta` from `dy`.
fn backward(x: &FlexTensor, gamma: &FlexTensor, stats: &[(f32, f32)], dy: &FlexTensor) -> [FlexTensor; 3] {
    let shape = x.layout().shape().clone();
    let (xc, gc, dc) = (contiguous(x), contiguous(gamma), contiguous(dy));
    let (xs, gs, ds) =
        (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"), dc.as_slice::<f32>().expect("f32"));
    assert_eq!(ds.len(), xs.len(), "layer_norm backward: output gradient of another shape");
    let c = gs.len();
    let mut dx = Output::new(xs.len());
    // Per block, dγ then dβ in one vector; summed over blocks in block order.
    let parts: Vec<Vec<f32>> = dx
        .chunks(ROWS * c.max(1))
        .enumerate()
        .map(|(blk, dxb)| {
            let at = blk * ROWS * c..blk * ROWS * c + dxb.len();
            let mut sums = vec![0f32; 2 * c];
            let (dg, db) = sums.split_at_mut(c);
            backward_rows(dxb, &ds[at.clone()], &xs[at], gs, &stats[blk * ROWS..], dg, db);
            sums
        })
        .collect();
    let mut dgamma = sum_in_order(parts, 2 * c);
    let dbeta = dgamma.split_off(c);
    // SAFETY: the blocks cover dx, each row written by `backward_rows`.
    let dx = unsafe { dx.assume_init() };
    [
        FlexTensor::from_data(TensorData::new(dx, shape)),
        FlexTensor::from_data(TensorData::new(dgamma, [c])),
        FlexTensor::from_data(TensorData::new(dbeta, [c])),
    ]
}

/// The autodiff op: parents `x`, `gamma`, `beta`; state `x`, `gamma` and the row statistics.
fn autodiff(x: AdFlex, gamma: AdFlex, beta: AdFlex, eps: f64) -> AdFlex {
    #[derive(Debug)]
    struct LayerNormBackward;

    impl Backward<Flex, 3> for LayerNormBackward {
        type State = (FlexTensor, FlexTensor, Vec<(f32, f32)>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, gamma, stats) = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [px, pg, pb] = ops.parents;
            for (parent, grad) in [px, pg, pb].into_iter().zip(backward(&x, &gamma, &stats, &dy)) {
                if let Some(node) = parent {
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }

    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    match LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, stats) = forward(&x.primitive, &gamma.primitive, &beta.primitive, eps);
            prep.finish((x.primitive, gamma.primitive, stats), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &gamma.primitive, &beta.primitive, eps).0),
    }
}
