//! SiLU fused on burn-flex (one pass each way), and the branch-free `exp` it vectorises with.
//!
//! burn 0.21 computes `silu(x)` as `x * sigmoid(x)`: a scalar `expf` per element, two
//! allocations forward, and three element-wise passes (mul, sigmoid, add) in the backward.
//! The fused version is one pass each way, with a polynomial `exp` that the compiler
//! vectorises, over rayon chunks.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::gemm::Output;
use super::{back, cast, contiguous, float, is_f32, wrap, AdFlex};
use std::mem::MaybeUninit;

/// SiLU, `x * sigmoid(x)`, fused on burn-flex; burn's `activation::silu` elsewhere.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let p = match cast::<B::FloatTensorPrimitive, FlexTensor>(float(x)) {
        Ok(t) if is_f32(&t) => return wrap::<B, D, _>(silu_forward(t, true).expect("f32")),
        r => back(r),
    };
    let p = match cast::<B::FloatTensorPrimitive, AdFlex>(p) {
        Ok(t) if is_f32(&t.primitive) => return wrap::<B, D, _>(silu_autodiff(t)),
        r => back(r),
    };
    burn::tensor::activation::silu(Tensor::from_primitive(TensorPrimitive::Float(p)))
}

/// The autodiff op: forward fused, backward fused; the input is the saved state.
fn silu_autodiff(x: AdFlex) -> AdFlex {
    #[derive(Debug)]
    struct SiluBackward;

    impl Backward<Flex, 1> for SiluBackward {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
                silu_backward(&x, &g).expect("f32 tensors of one shape (checked in the forward)")
            });
        }
    }

    match SiluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            // The input is the backward's state, so it is shared: the output gets a new buffer.
            let y = silu_forward(x.primitive.clone(), false).expect("f32, checked");
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(silu_forward(x.primitive, true).expect("f32, checked")),
    }
}

/// Elements per rayon task: large enough that scheduling is noise, small enough to split the
/// activations of one image across both cores.
const CHUNK: usize = 1 << 14;

/// `x * sigmoid(x)` for an f32 tensor (any layout); `None` for another dtype. With `reuse`, a
/// contiguous input whose buffer nothing else holds is overwritten instead of allocating.
pub fn silu_forward(mut x: FlexTensor, reuse: bool) -> Option<FlexTensor> {
    if !is_f32(&x) {
        return None;
    }
    let n = x.layout().num_elements();
    if reuse && x.layout().is_contiguous() && x.layout().start_offset() == 0 {
        if let Some(buf) = x.try_storage_mut::<f32>() {
            if buf.len() == n {
                buf.par_chunks_mut(CHUNK).for_each(silu_in_place);
                return Some(x);
            }
        }
    }
    let shape = x.layout().shape().clone();
    let xc = contiguous(&x);
    let src = xc.as_slice::<f32>().expect("contiguous f32");
    let mut out = Output::new(src.len());
    out.chunks(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(o, i)| silu_into(o, i));
    // SAFETY: silu_into wrote every element of every chunk.
    Some(FlexTensor::from_data(TensorData::new(unsafe { out.assume_init() }, shape)))
}

/// `g * sigmoid(x) * (1 + x * (1 - sigmoid(x)))`, the SiLU gradient; `None` unless both are f32
/// of the same shape.
pub fn silu_backward(x: &FlexTensor, g: &FlexTensor) -> Option<FlexTensor> {
    if !is_f32(x) || !is_f32(g) || x.layout().shape() != g.layout().shape() {
        return None;
    }
    let shape = x.layout().shape().clone();
    let (xc, gc) = (contiguous(x), contiguous(g));
    let (xs, gs) = (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"));
    let mut out = Output::new(xs.len());
    out.chunks(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| silu_grad_into(o, x, g));
    // SAFETY: silu_grad_into wrote every element of every chunk.
    Some(FlexTensor::from_data(TensorData::new(unsafe { out.assume_init() }, shape)))
}

/// `v = silu(v)` over a slice, on the calling thread (a conv's epilogue).
pub(super) fn silu_rows(xs: &mut [f32]) {
    silu_in_place(xs)
}

/// `v = silu(v + b)` over a slice, on the calling thread (a conv's epilogue: its bias or
/// folded BN shift, and the activation, in one pass).
pub(super) fn silu_shift_rows(xs: &mut [f32], b: f32) {
    silu_shift_in_place(xs, b)
}

multiversion! {
    /// `v = silu(v + b)` over a slice.
    fn silu_shift_in_place(xs: &mut [f32], b: f32) {
        for v in xs {
            *v = silu1(*v + b);
        }
    }
}

multiversion! {
    /// `v = silu(v)` over a slice.
    fn silu_in_place(xs: &mut [f32]) {
        for v in xs {
            *v = silu1(*v);
        }
    }
}

multiversion! {
    /// `o = silu(i)`, slices of one length (`o` may be uninitialised: written, never read).
    fn silu_into(o: &mut [MaybeUninit<f32>], i: &[f32]) {
        for (o, &v) in o.iter_mut().zip(i) {
            o.write(silu1(v));
        }
    }
}

multiversion! {
    /// `o = g * silu'(x)`, slices of one length (`o` may be uninitialised).
    fn silu_grad_into(o: &mut [MaybeUninit<f32>], x: &[f32], g: &[f32]) {
        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
            let s = sigmoid1(x);
            o.write(g * s * (1.0 + x * (1.0 - s)));
        }
    }
}

#[inline(always)]
pub(super) fn silu1(x: f32) -> f32 {
    x * sigmoid1(x)
}

/// `1 / (1 + exp(-x))` from `e = exp(-|x|)`, with no branch (so that loops vectorise).
#[inline(always)]
pub(super) fn sigmoid1(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// `exp(t)` for `t <= 0` (Cephes' `expf`: range reduction by ln 2 in two parts, a degree-6
/// polynomial, and the power of two built in the exponent bits). Relative error below 2e-7;
/// below -87 it returns exp(-87) ≈ 1.6e-38 instead of a denormal or 0, which no sigmoid
/// can tell apart. Written with no branch and no libm call, so the compiler vectorises it. The
/// polynomial and the range reduction are fused multiply-adds (`mul_add`): inside the
/// `multiversion!` kernels that call it (AVX2+FMA, AVX-512) each is one instruction, ~15%
/// fewer cycles per element than separate multiplies and adds (the probe's softmax passes at
/// 50,000 x 1000: 32 → 26–28 ms on 2 threads, Intel Xeon, 2026-12-08) and one rounding less.
/// On a CPU without FMA the baseline build calls libm's `fmaf` instead: correct, slower.
#[inline(always)]
pub fn exp_nonpositive(t: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to nearest
    let t = t.max(-87.0);
    // `k` holds round(t·log2 e) in its low mantissa bits; the integer is read from the bits,
    // not converted with `n as i32` (a saturating conversion: with it the SiLU loop ran at half
    // this speed, ~7.5 cycles per element; benches/kernels.rs, docs/performance.md).
    let k = t.mul_add(LOG2E, ROUND);
    let n = k - ROUND;
    let ni = (k.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (-n).mul_add(C2, (-n).mul_add(C1, t));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r + 1.0);
    e * f32::from_bits(((ni + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f64;
        let mut t = -87.0f32;
        while t <= 0.0 {
            let (a, b) = (exp_nonpositive(t) as f64, (t as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            t += 0.001_3;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-200.0) > 0.0 && exp_nonpositive(-200.0) < 1e-37);
    }

    #[test]
    fn sigmoid_is_exact_enough_at_the_extremes() {
        for x in [-100.0f32, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 100.0] {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid1(x) as f64;
            assert!((got - want).abs() <= 2e-7 * want.max(1e-30) + 1e-38, "x {x}: {got} vs {want}");
        }
    }
}
