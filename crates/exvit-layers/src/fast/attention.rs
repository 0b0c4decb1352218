//! Multi-head self-attention from a packed `qkv` projection, fused on burn-flex (f32).
//!
//! timm's attention reshapes `qkv` `[B, N, 3C]` to `[B, N, 3, H, hd]`, permutes it to
//! `[3, B, H, N, hd]`, and splits q, k and v: on flex each split is a strided copy, and so are
//! `k.swap_dims` and the final `swap_dims(1, 2)` back to `[B, N, C]`; the softmax runs a scalar
//! `expf`. A mobilevit_xxs forward pass spent ~10% of its samples in those copies and ~7% in that
//! `expf` (docs/performance.md). Here one rayon task per (sequence, head) packs its head's K and
//! V out of the `qkv` buffer into small buffers, then takes the queries 16 at a time: the
//! block's scores, softmax and weighted sum of V run in L1 with register-blocked kernels
//! (`blocked.rs`; the `gemm` crate, which packs its operands on every call, ran these
//! products of inner dimension 16–64 at about a quarter of the FMA peak). The output is
//! written in place into `[B, N, C]`; the softmax runs on the vectorised `exp` of the SiLU. The
//! backward (its own autodiff op) works the same way and writes the gradient of `qkv` directly.
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

use super::blocked::{outer_add, pack_transposed, scores, weighted_sum, JB, R, VW};
use super::gemm::Output;
use super::{back, cast, contiguous, exp_nonpositive, float, is_f32, wrap, AdFlex};

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

/// One task's (sequence, head) packed operands and a block's buffers, reused from task to task
/// on a thread. A block is [`R`] queries; its scores are kept transposed, `[N, R]` (a key's
/// scores for the block's queries side by side), so that the softmax over the keys runs
/// across vectors, with no reduction inside one. `hp` is the head width rounded up to [`VW`]
/// (zeros past `hd`).
#[derive(Default)]
struct Packed {
    /// K (forward) or V (backward), packed for [`scores`] ([`pack_transposed`]).
    keys: Vec<f32>,
    /// `[N, hp]`: V (forward) or K (backward), for [`weighted_sum`].
    m: Vec<f32>,
    /// `[hd, R]`: the block's rows of Q·scale (forward) or dY (backward), transposed.
    qt: Vec<f32>,
    /// `[R, hp]`: the block's rows of Q and of dY (backward), for [`outer_add`].
    q: Vec<f32>,
    dy: Vec<f32>,
    /// `[N, R]` (the keys rounded up to [`JB`]): the block's scores, then weights (forward), or
    /// dP then dS (backward).
    st: Vec<f32>,
    /// `[R, hp]`: a block's product with `m`.
    y: Vec<f32>,
    /// `[N, hp]`: dK/scale and dV, summed over the blocks (backward).
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// `dst[i, d] = src[i · stride + d]` for `i < rows`, `d < width`, zeros elsewhere in
/// `[dst_rows, ld]`.
fn pack_rows(
    dst: &mut Vec<f32>,
    src: &[f32],
    (rows, width, stride): (usize, usize, usize),
    (dst_rows, ld): (usize, usize),
) {
    dst.clear();
    dst.resize(dst_rows * ld, 0.0);
    for (i, row) in dst.chunks_exact_mut(ld).take(rows).enumerate() {
        row[..width].copy_from_slice(&src[i * stride..][..width]);
    }
}

/// The forward pass on a flex f32 `qkv`: the output `[B, N, C]` and, with `keep`, the attention
/// weights for the backward (per sequence and head, per block of [`R`] queries, `[N, R]`: the
/// layout [`backward`] reads; `[B·H, blocks, N, R]`).
///
/// One task per (sequence, head) packs K and V, then takes the queries [`R`] at a time: the
/// block's scores ([`scores`]), their softmax, and the weighted sum of V ([`weighted_sum`]), all
/// in L1. Without `keep` the weights are never normalised: the block's output rows are divided
/// by the softmax sums instead (`hd` divisions a row instead of `N`).
fn forward(qkv: &FlexTensor, g: &Geometry, keep: bool) -> (FlexTensor, Option<FlexTensor>) {
    let Geometry { b, n, c, h, hd, scale } = *g;
    let qkv = contiguous(qkv);
    let src = qkv.as_slice::<f32>().expect("contiguous f32");
    let (blocks, hp) = (n.div_ceil(R), hd.next_multiple_of(VW));
    // Uninitialised: every (sequence, head) task writes its columns of y (and its blocks of the
    // weights) in full (zeroing them first was ~13% of the pass).
    let mut y = Output::new(b * n * c);
    let out = y.shared();
    let mut weights = keep.then(|| Output::new(b * h * blocks * n * R));
    let wout = weights.as_mut().map(|w| w.shared());
    (0..b * h).into_par_iter().for_each_init(Packed::default, |pk, t| {
        let (bi, hi) = (t / h, t % h);
        let base = bi * n * 3 * c + hi * hd;
        let rows = |off: usize| &src[base + off..];
        pack_transposed(&mut pk.keys, rows(c), (n, hd, 3 * c), 1.0);
        pack_rows(&mut pk.m, rows(2 * c), (n, hd, 3 * c), (n, hp));
        pk.st.resize(n.next_multiple_of(JB) * R, 0.0);
        pk.y.resize(R * hp, 0.0);
        let mut sums = [0f32; R];
        for blk in 0..blocks {
            let (i0, r) = (blk * R, R.min(n - blk * R));
            pack_transposed(&mut pk.qt, &rows(0)[i0 * 3 * c..], (r, hd, 3 * c), scale);
            scores(&mut pk.st, &pk.qt, &pk.keys, hd, n);
            let st = &mut pk.st[..n * R];
            softmax_t(st, &mut sums, keep);
            if let Some(w) = wout {
                // SAFETY: block blk of task t's weights belongs to this task only.
                let dst = unsafe { std::slice::from_raw_parts_mut(w.at((t * blocks + blk) * n * R), n * R) };
                dst.copy_from_slice(st);
            }
            weighted_sum(&mut pk.y, st, &pk.m, n, hp);
            for (i, yrow) in pk.y.chunks_exact(hp).take(r).enumerate() {
                let k = if keep { 1.0 } else { 1.0 / sums[i] };
                // SAFETY: columns hi·hd.. of row i0 + i of sequence bi of y belong to this task.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at((bi * n + i0 + i) * c + hi * hd), hd) };
                dst.iter_mut().zip(yrow).for_each(|(o, &v)| *o = v * k);
            }
        }
    });
    // SAFETY: the heads' columns cover every row of y; with `keep` the tasks wrote every block
    // of the weights.
    let y = FlexTensor::from_data(TensorData::new(unsafe { y.assume_init() }, [b, n, c]));
    let p = weights.map(|w| FlexTensor::from_data(TensorData::new(unsafe { w.assume_init() }, [b * h, blocks, n, R])));
    (y, p)
}

/// The gradient of `qkv` from the output's gradient `dy` `[B, N, C]` and the weights `p` (as
/// [`forward`] keeps them).
///
/// Per (sequence, head) and block of [`R`] rows: `dP = dY Vᵀ` ([`scores`] on V), the softmax
/// backward `dS = P ⊙ (dP − Σ dP⊙P)`, `dQ = scale · dS K` ([`weighted_sum`] on K), and the sums
/// over the blocks `dK = scale · Σ dSᵀ Q` and `dV = Σ Pᵀ dY` ([`outer_add`]).
fn backward(qkv: &FlexTensor, p: &FlexTensor, dy: &FlexTensor, g: &Geometry) -> FlexTensor {
    let Geometry { b, n, c, h, hd, scale } = *g;
    let (qkv, p, dy) = (contiguous(qkv), contiguous(p), contiguous(dy));
    let src = qkv.as_slice::<f32>().expect("contiguous f32");
    let weights = p.as_slice::<f32>().expect("contiguous f32");
    let dys = dy.as_slice::<f32>().expect("contiguous f32");
    assert_eq!(dys.len(), b * n * c, "attention backward: output gradient of another shape");
    let (blocks, hp) = (n.div_ceil(R), hd.next_multiple_of(VW));
    assert_eq!(weights.len(), b * h * blocks * n * R, "attention backward: weights of another shape");
    // Uninitialised: each task writes its head's q, k and v columns in full (no accumulation).
    let mut dqkv = Output::new(b * n * 3 * c);
    let out = dqkv.shared();
    (0..b * h).into_par_iter().for_each_init(Packed::default, |pk, t| {
        let (bi, hi) = (t / h, t % h);
        let base = bi * n * 3 * c + hi * hd;
        let rows = |off: usize| &src[base + off..];
        let dyt = &dys[bi * n * c + hi * hd..];
        pack_transposed(&mut pk.keys, rows(2 * c), (n, hd, 3 * c), 1.0);
        pack_rows(&mut pk.m, rows(c), (n, hd, 3 * c), (n, hp));
        for acc in [&mut pk.dk, &mut pk.dv] {
            acc.clear();
            acc.resize(n * hp, 0.0);
        }
        pk.st.resize(n.next_multiple_of(JB) * R, 0.0);
        pk.y.resize(R * hp, 0.0);
        for blk in 0..blocks {
            let (i0, r) = (blk * R, R.min(n - blk * R));
            let pt = &weights[(t * blocks + blk) * n * R..][..n * R];
            pack_transposed(&mut pk.qt, &dyt[i0 * c..], (r, hd, c), 1.0);
            pack_rows(&mut pk.dy, &dyt[i0 * c..], (r, hd, c), (R, hp));
            pack_rows(&mut pk.q, &rows(0)[i0 * 3 * c..], (r, hd, 3 * c), (R, hp));
            scores(&mut pk.st, &pk.qt, &pk.keys, hd, n);
            let ds = &mut pk.st[..n * R];
            softmax_grad_t(ds, pt);
            weighted_sum(&mut pk.y, ds, &pk.m, n, hp);
            for (i, yrow) in pk.y.chunks_exact(hp).take(r).enumerate() {
                // SAFETY: the q columns of head hi in row i0 + i of sequence bi of dqkv belong
                // to this task.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(base + (i0 + i) * 3 * c), hd) };
                dst.iter_mut().zip(yrow).for_each(|(o, &v)| *o = v * scale);
            }
            outer_add(&mut pk.dk, ds, &pk.q, n, hp);
            outer_add(&mut pk.dv, pt, &pk.dy, n, hp);
        }
        for (j, (dk, dv)) in pk.dk.chunks_exact(hp).zip(pk.dv.chunks_exact(hp)).enumerate() {
            // SAFETY: the k and v columns of head hi in row j of sequence bi of dqkv belong to
            // this task.
            let (k, v) = unsafe {
                (
                    std::slice::from_raw_parts_mut(out.at(base + j * 3 * c + c), hd),
                    std::slice::from_raw_parts_mut(out.at(base + j * 3 * c + 2 * c), hd),
                )
            };
            k.iter_mut().zip(dk).for_each(|(o, &v)| *o = v * scale);
            v.copy_from_slice(&dv[..hd]);
        }
    });
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

multiversion! {
    /// The softmax over the keys of a block's transposed scores `st [n, R]`, each of the `R`
    /// lanes a query, in place: the maxima, sums and divisions run across the rows (vertical
    /// operations, no reduction inside a vector). With `normalize` the weights are divided by
    /// their sums; without, `sums` gets the sums and the weights stay `exp(s − max)`.
    fn softmax_t(st: &mut [f32], sums: &mut [f32; R], normalize: bool) {
        let mut max = [f32::NEG_INFINITY; R];
        for row in st.chunks_exact(R) {
            for l in 0..R {
                max[l] = max[l].max(row[l]);
            }
        }
        let mut acc = [0f32; R];
        for row in st.chunks_exact_mut(R) {
            for l in 0..R {
                let e = exp_nonpositive(row[l] - max[l]);
                row[l] = e;
                acc[l] += e;
            }
        }
        *sums = acc;
        if normalize {
            let inv: [f32; R] = std::array::from_fn(|l| 1.0 / acc[l]);
            for row in st.chunks_exact_mut(R) {
                for l in 0..R {
                    row[l] *= inv[l];
                }
            }
        }
    }
}

multiversion! {
    /// The softmax backward on a block's transposed `[n, R]` buffers, in place on `d`:
    /// `d ← p ⊙ (d − Σ_j d⊙p)`, the sum over the keys (the rows), per query (lane).
    fn softmax_grad_t(d: &mut [f32], p: &[f32]) {
        let mut dot = [0f32; R];
        for (dr, pr) in d.chunks_exact(R).zip(p.chunks_exact(R)) {
            for l in 0..R {
                dot[l] += dr[l] * pr[l];
            }
        }
        for (dr, pr) in d.chunks_exact_mut(R).zip(p.chunks_exact(R)) {
            for l in 0..R {
                dr[l] = pr[l] * (dr[l] - dot[l]);
            }
        }
    }
}
