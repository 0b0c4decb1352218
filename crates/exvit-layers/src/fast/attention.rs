//! Multi-head self-attention from a packed `qkv` projection, fused on burn-flex (f32).
//!
//! timm's attention reshapes `qkv` `[B, N, 3C]` to `[B, N, 3, H, hd]`, permutes it to
//! `[3, B, H, N, hd]`, and splits q, k and v: on flex each split is a strided copy, and so are
//! `k.swap_dims` and the final `swap_dims(1, 2)` back to `[B, N, C]`; the softmax runs a scalar
//! `expf`. A mobilevit_xxs forward pass spent ~10% of its samples in those copies and ~7% in that
//! `expf` (docs/performance.md). Here every matrix product reads its operand straight out of the
//! packed `qkv` buffer through strides (gemm takes row and column strides), the output is written
//! in place into `[B, N, C]`, and the softmax runs on the vectorised `exp` of the SiLU. One rayon
//! task per (sequence, head); the backward (its own autodiff op) works the same way and writes
//! the gradient of `qkv` directly.
//!
//! The reference is [`attention_generic`], burn's tensor ops in timm's order, which every other
//! backend uses; `tests/fast.rs` compares the two (values and gradients) and checks the
//! gradient by finite differences.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::gemm::{init, Output};
use super::{back, cast, contiguous, exp_nonpositive, float, is_f32, matmul, wrap, AdFlex};

/// Attention of `heads` heads over `qkv` `[B, N, 3C]` (the packed projection, q then k then v,
/// each `[H, hd]` within its `C`), scale `hd^-0.5`, no dropout: `[B, N, C]`, before `proj`.
/// Fused on burn-flex f32 (with its own gradient under autodiff); [`attention_generic`] elsewhere.
pub fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let Some(geo) = Geometry::of(qkv.dims(), heads) else {
        return attention_generic(qkv, heads, |a| a);
    };
    let p = match cast::<B::FloatTensorPrimitive, FlexTensor>(float(qkv)) {
        Ok(t) if is_f32(&t) => return wrap::<B, 3, _>(forward(&t, &geo, false).0),
        r => back(r),
    };
    let p = match cast::<B::FloatTensorPrimitive, AdFlex>(p) {
        Ok(t) if is_f32(&t.primitive) => return wrap::<B, 3, _>(attention_autodiff(t, geo)),
        r => back(r),
    };
    attention_generic(Tensor::from_primitive(TensorPrimitive::Float(p)), heads, |a| a)
}

/// timm's attention in burn's tensor ops (the reference, and the path of every backend but
/// flex): `softmax(q·scale @ kᵀ)`, then `attn_drop` on the weights, `@ v`, heads merged.
pub fn attention_generic<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    attn_drop: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 3> {
    let [b, n, c3] = qkv.dims();
    let (c, h) = (c3 / 3, heads);
    let hd = c / h;
    // [B, N, 3C] -> [3, B, H, N, hd]
    let qkv = qkv.reshape([b, n, 3, h, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, h, n, hd]);
    let (q, k, v) = (part(0), part(1), part(2));
    let scale = (hd as f64).powf(-0.5);
    // The softmax in f32 when the scores are half precision (as autocast runs it).
    let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3));
    let to = crate::precision::accumulation_dtype(scores.dtype());
    let attn = attn_drop(crate::precision::promoted(scores, to, |s| softmax(s, 3)));
    attn.matmul(v).swap_dims(1, 2).reshape([b, n, c])
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Sequences.
    b: usize,
    /// Tokens per sequence.
    n: usize,
    /// Width of q (and of k, v, and the output).
    c: usize,
    /// Heads.
    h: usize,
    /// Width of a head.
    hd: usize,
    /// `hd^-0.5`.
    scale: f32,
}

impl Geometry {
    fn of([b, n, c3]: [usize; 3], h: usize) -> Option<Self> {
        if h == 0 || c3 % 3 != 0 || (c3 / 3) % h != 0 || b * n == 0 {
            return None;
        }
        let (c, hd) = (c3 / 3, c3 / 3 / h);
        Some(Self { b, n, c, h, hd, scale: (hd as f64).powf(-0.5) as f32 })
    }
}

/// The forward pass on a flex f32 `qkv`: the output `[B, N, C]` and, with `keep`, the attention
/// weights `[B, H, N, N]` for the backward.
fn forward(qkv: &FlexTensor, g: &Geometry, keep: bool) -> (FlexTensor, Option<FlexTensor>) {
    let Geometry { b, n, c, h, hd, scale } = *g;
    let qkv = contiguous(qkv);
    let src = qkv.as_slice::<f32>().expect("contiguous f32");
    // Uninitialised: every (sequence, head) task writes its columns of y (and its block of the
    // weights) in full, with gemm's `accumulate` off (zeroing them first was ~13% of the pass).
    let mut y = Output::new(b * n * c);
    let out = y.shared();
    let head = |t: usize, s: &mut [f32]| {
        let (bi, hi) = (t / h, t % h);
        let base = bi * n * 3 * c + hi * hd;
        let (q, k, v) = (src[base..].as_ptr(), src[base + c..].as_ptr(), src[base + 2 * c..].as_ptr());
        // SAFETY: q, k, v are [N, hd] blocks of rows of `src` (row stride 3C, in bounds: the
        // last row starts at (b·N + N−1)·3C + 2C + (H−1)·hd); s is [N, N]; task t writes only
        // the columns hi·hd..(hi+1)·hd of the rows of sequence bi of y.
        unsafe {
            // S = scale · Q Kᵀ
            matmul((n, n, hd), s.as_mut_ptr(), (1, n), false, q, (1, 3 * c), k, (3 * c, 1), scale);
            softmax_rows(s, n);
            // Y = P V
            matmul((n, hd, n), out.at(bi * n * c + hi * hd), (1, c), false, s.as_ptr(), (1, n), v, (1, 3 * c), 1.0);
        }
    };
    let p = if keep {
        let mut p = Output::new(b * h * n * n);
        // SAFETY: gemm writes all of s (S = scale·QKᵀ) before the softmax reads it.
        p.chunks(n * n).enumerate().for_each(|(t, s)| head(t, unsafe { init(s) }));
        // SAFETY: the tasks wrote every block.
        Some(FlexTensor::from_data(TensorData::new(unsafe { p.assume_init() }, [b, h, n, n])))
    } else {
        (0..b * h).into_par_iter().for_each_init(|| vec![0f32; n * n], |s, t| head(t, s));
        None
    };
    // SAFETY: the heads' columns cover every row of y.
    (FlexTensor::from_data(TensorData::new(unsafe { y.assume_init() }, [b, n, c])), p)
}

/// The gradient of `qkv` from the output's gradient `dy` `[B, N, C]` and the weights `p`.
fn backward(qkv: &FlexTensor, p: &FlexTensor, dy: &FlexTensor, g: &Geometry) -> FlexTensor {
    let Geometry { b, n, c, h, hd, scale } = *g;
    let (qkv, p, dy) = (contiguous(qkv), contiguous(p), contiguous(dy));
    let src = qkv.as_slice::<f32>().expect("contiguous f32");
    let weights = p.as_slice::<f32>().expect("contiguous f32");
    let dys = dy.as_slice::<f32>().expect("contiguous f32");
    assert_eq!(dys.len(), b * n * c, "attention backward: output gradient of another shape");
    // Uninitialised: each task writes its head's q, k and v columns in full (no accumulation).
    let mut dqkv = Output::new(b * n * 3 * c);
    let out = dqkv.shared();
    (0..b * h).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |ds, t| {
            let (bi, hi) = (t / h, t % h);
            let base = bi * n * 3 * c + hi * hd;
            let (q, k, v) = (src[base..].as_ptr(), src[base + c..].as_ptr(), src[base + 2 * c..].as_ptr());
            let pt = &weights[t * n * n..(t + 1) * n * n];
            let dyt = dys[bi * n * c + hi * hd..].as_ptr();
            // SAFETY: as in the forward; task t writes only the q, k and v columns of head hi in
            // the rows of sequence bi of dqkv.
            unsafe {
                // dP = dY Vᵀ
                matmul((n, n, hd), ds.as_mut_ptr(), (1, n), false, dyt, (1, c), v, (3 * c, 1), 1.0);
                softmax_grad_rows(ds, pt, n);
                // dQ = scale · dS K;  dK = scale · dSᵀ Q;  dV = Pᵀ dY
                matmul((n, hd, n), out.at(base), (1, 3 * c), false, ds.as_ptr(), (1, n), k, (1, 3 * c), scale);
                matmul((n, hd, n), out.at(base + c), (1, 3 * c), false, ds.as_ptr(), (n, 1), q, (1, 3 * c), scale);
                matmul((n, hd, n), out.at(base + 2 * c), (1, 3 * c), false, pt.as_ptr(), (n, 1), dyt, (1, c), 1.0);
            }
        },
    );
    // SAFETY: the heads' q, k and v columns cover every row.
    FlexTensor::from_data(TensorData::new(unsafe { dqkv.assume_init() }, [b, n, 3 * c]))
}

/// The autodiff op: the weights and `qkv` are the backward's state.
fn attention_autodiff(qkv: AdFlex, geo: Geometry) -> AdFlex {
    #[derive(Debug)]
    struct AttentionBackward;

    impl Backward<Flex, 1> for AttentionBackward {
        type State = (FlexTensor, FlexTensor, Geometry);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (qkv, p, geo) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| backward(&qkv, &p, &dy, &geo));
        }
    }

    match AttentionBackward.prepare::<NoCheckpointing>([qkv.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, p) = forward(&qkv.primitive, &geo, true);
            prep.finish((qkv.primitive, p.expect("kept"), geo), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&qkv.primitive, &geo, false).0),
    }
}

/// Lanes of the reductions below: 16 independent accumulators, so that they vectorise.
const LANES: usize = 16;

multiversion! {
    /// Softmax of each row (length `n`) of `s`, in place.
    fn softmax_rows(s: &mut [f32], n: usize) {
        for row in s.chunks_exact_mut(n) {
            let mut m = [f32::NEG_INFINITY; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for ch in &mut chunks {
                for l in 0..LANES {
                    m[l] = m[l].max(ch[l]);
                }
            }
            let max = chunks.remainder().iter().fold(m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b));
            let mut acc = [0f32; LANES];
            let mut chunks = row.chunks_exact_mut(LANES);
            for ch in &mut chunks {
                for l in 0..LANES {
                    let e = exp_nonpositive(ch[l] - max);
                    ch[l] = e;
                    acc[l] += e;
                }
            }
            let mut sum: f32 = acc.iter().sum();
            for v in chunks.into_remainder() {
                *v = exp_nonpositive(*v - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// The softmax backward per row: `d ← p ⊙ (d − Σ d⊙p)`, in place on `d`.
    fn softmax_grad_rows(d: &mut [f32], p: &[f32], n: usize) {
        for (dr, pr) in d.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
            let mut acc = [0f32; LANES];
            let (dc, pc) = (dr.chunks_exact(LANES), pr.chunks_exact(LANES));
            let (drem, prem) = (dc.remainder(), pc.remainder());
            for (a, b) in dc.zip(pc) {
                for l in 0..LANES {
                    acc[l] += a[l] * b[l];
                }
            }
            let dot = acc.iter().sum::<f32>() + drem.iter().zip(prem).map(|(a, b)| a * b).sum::<f32>();
            for (a, &b) in dr.iter_mut().zip(pr) {
                *a = b * (*a - dot);
            }
        }
    }
}
