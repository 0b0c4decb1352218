//! Fused kernels for the CPU backend (burn-flex, f32), with their own gradients. Every other
//! backend, dtype or layout takes burn's generic path, which stays the reference the tests
//! compare against (`tests/fast.rs`: values and finite-difference gradients).
//!
//! The layers stay generic over the backend: each op checks at run time whether `B` is `Flex`
//! or `Autodiff<Flex>` (a `TypeId` comparison, resolved per call at no measurable cost) and
//! moves the tensor primitive into the fused kernel; no backend trait bound changes. This file
//! holds what the kernels share: that dispatch (`cast`, `back`, `wrap`; `conv_dispatch` and one
//! autodiff op for the three convolutions), strided gemm (`matmul`), `multiversion!`, and the
//! SiLU. The others: [`attention`], [`conv1x1`], [`conv2d_dense`], [`conv2d_depthwise`],
//! [`batch_norm_train`].
//!
//! burn 0.21 computes `silu(x)` as `x * sigmoid(x)`: a scalar `expf` per element, two
//! allocations forward, and three element-wise passes (mul, sigmoid, add) in the backward.
//! The fused version is one pass each way, with a polynomial `exp` that the compiler
//! vectorises, over rayon chunks.

use std::any::Any;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// Moves `t` into a `U` when `T` is `U` (the same type at run time); gives it back otherwise.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just set")),
        None => Err(slot.expect("not taken")),
    }
}

/// The autodiff tensor primitive of `Autodiff<Flex>` (burn does not export the type's name).
type AdFlex = FloatTensor<Autodiff<Flex>>;

/// SiLU, `x * sigmoid(x)`, fused on burn-flex; burn's `activation::silu` elsewhere.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let TensorPrimitive::Float(p) = x.into_primitive() else {
        unreachable!("a float tensor's primitive is Float unless quantized")
    };
    let p = match cast::<B::FloatTensorPrimitive, FlexTensor>(p) {
        Ok(t) if is_f32(&t) => return wrap::<B, D, _>(silu_forward(t, true).expect("f32")),
        r => back(r),
    };
    let p = match cast::<B::FloatTensorPrimitive, AdFlex>(p) {
        Ok(t) if is_f32(&t.primitive) => return wrap::<B, D, _>(silu_autodiff(t)),
        r => back(r),
    };
    burn::tensor::activation::silu(Tensor::from_primitive(TensorPrimitive::Float(p)))
}

/// Undoes a failed or unused cast back to the backend's primitive.
fn back<P: 'static, T: 'static>(r: Result<T, P>) -> P {
    match r {
        Ok(t) => cast::<T, P>(t).unwrap_or_else(|_| unreachable!("T is P")),
        Err(p) => p,
    }
}

/// Runs a convolution on `x` `[N, I, H, W]`, `w` and an optional per-output-channel `bias`
/// with the kernels `forward` and `backward` of geometry `geo`: on plain burn-flex f32 the
/// forward with the bias in the kernel; on `Autodiff<Flex>` f32 their autodiff op (the bias added
/// after it by burn, so that it has its gradient); `generic` (burn's ops) on every other backend
/// or dtype.
fn conv_dispatch<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    geo: Geo,
    (forward, backward): (ConvForward, ConvBackward),
    generic: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let o = w.dims()[0];
    let (TensorPrimitive::Float(px), TensorPrimitive::Float(pw)) = (x.into_primitive(), w.into_primitive()) else {
        unreachable!("float tensors' primitives are Float unless quantized")
    };
    let (px, pw) = match (cast::<_, FlexTensor>(px), cast::<_, FlexTensor>(pw)) {
        (Ok(x), Ok(w)) if is_f32(&x) && is_f32(&w) => {
            let b = bias.map(|b| match b.into_primitive() {
                TensorPrimitive::Float(p) => {
                    contiguous(&cast::<_, FlexTensor>(p).unwrap_or_else(|_| unreachable!("same backend")))
                }
                _ => unreachable!("float"),
            });
            let bs = b.as_ref().map(|b| b.as_slice::<f32>().expect("f32 bias of an f32 conv"));
            return wrap::<B, 4, _>(forward(&x, &w, bs, &geo));
        }
        (x, w) => (back(x), back(w)),
    };
    let unwrap = |p| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
    let y = match (cast::<_, AdFlex>(px), cast::<_, AdFlex>(pw)) {
        (Ok(x), Ok(w)) if is_f32(&x.primitive) && is_f32(&w.primitive) => {
            wrap::<B, 4, _>(conv_autodiff(x, w, geo, forward, backward))
        }
        (x, w) => return generic(unwrap(back(x)), unwrap(back(w)), bias),
    };
    match bias {
        Some(b) => y + b.reshape([1, o, 1, 1]),
        None => y,
    }
}

/// A raw pointer that rayon tasks may share: each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: only used to write disjoint elements from different tasks (see each use).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
impl Shared {
    /// The pointer, offset (a method, so that closures capture the whole `Shared`).
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation.
        unsafe { self.0.add(offset) }
    }
}

/// `dst[m×n] (+)= beta · lhs[m×k] · rhs[k×n]`, each matrix given by its pointer and its
/// (column, row) strides in elements; single-threaded (the tasks are the parallelism).
///
/// # Safety
/// Every pointer with its strides must address valid elements; `dst` must not alias the others.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    mnk: (usize, usize, usize),
    dst: *mut f32,
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    lhs_s: (usize, usize),
    rhs: *const f32,
    rhs_s: (usize, usize),
    beta: f32,
) {
    matmul_threads(mnk, dst, dst_s, accumulate, lhs, lhs_s, rhs, rhs_s, beta, 1)
}

/// [`matmul`] on `threads` of rayon's pool (gemm splits the output; one thread: no pool).
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_threads(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_cs, dst_rs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (usize, usize),
    beta: f32,
    threads: usize,
) {
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

/// The geometry of one conv call.
#[derive(Debug, Clone, Copy)]
struct Geo {
    n: usize,
    i: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl Geo {
    fn new([n, i, h, w]: [usize; 4], o: usize, k: usize, s: usize, p: usize) -> Option<Self> {
        if s == 0 || h + 2 * p < k || w + 2 * p < k {
            return None;
        }
        Some(Self { n, i, h, w, o, k, s, p, ho: (h + 2 * p - k) / s + 1, wo: (w + 2 * p - k) / s + 1 })
    }
    /// Rows of col: `I·k·k`.
    fn rows(&self) -> usize {
        self.i * self.k * self.k
    }
    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// The output columns `ox` whose input column `ox·s + kx − p` is inside the image.
    fn cols(&self, kx: usize) -> (usize, usize) {
        let lo = if kx >= self.p { 0 } else { (self.p - kx).div_ceil(self.s) };
        let hi = if self.w + self.p > kx { ((self.w + self.p - kx - 1) / self.s + 1).min(self.wo) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// A conv kernel's forward: `(x, w, bias, geometry) → y`.
type ConvForward = fn(&FlexTensor, &FlexTensor, Option<&[f32]>, &Geo) -> FlexTensor;
/// Its backward: `(x, w, dy, geometry, want dx, want dw) → (dx, dw)`.
type ConvBackward =
    fn(&FlexTensor, &FlexTensor, &FlexTensor, &Geo, bool, bool) -> (Option<FlexTensor>, Option<FlexTensor>);

/// The autodiff op of a bias-free conv from its two kernels; the input, the weight and the
/// geometry are the state, and only the gradients the graph needs are computed.
fn conv_autodiff(x: AdFlex, w: AdFlex, geo: Geo, forward: ConvForward, backward: ConvBackward) -> AdFlex {
    #[derive(Debug)]
    struct ConvOp(ConvBackward);

    impl Backward<Flex, 2> for ConvOp {
        type State = (FlexTensor, FlexTensor, Geo);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w, geo) = ops.state;
            let [px, pw] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            let (dx, dw) = (self.0)(&x, &w, &dy, &geo, px.is_some(), pw.is_some());
            if let (Some(node), Some(dx)) = (px, dx) {
                grads.register::<Flex>(node.id, dx);
            }
            if let (Some(node), Some(dw)) = (pw, dw) {
                grads.register::<Flex>(node.id, dw);
            }
        }
    }

    match ConvOp(backward).prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = forward(&x.primitive, &w.primitive, None, &geo);
            prep.finish((x.primitive, w.primitive, geo), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &w.primitive, None, &geo)),
    }
}

fn wrap<B: Backend, const D: usize, T: 'static>(y: T) -> Tensor<B, D> {
    match cast::<_, B::FloatTensorPrimitive>(y) {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(p)),
        Err(_) => unreachable!("checked by the caller's cast"),
    }
}

fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
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
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(o, i)| silu_into(o, i));
    Some(FlexTensor::from_data(TensorData::new(out, shape)))
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
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| silu_grad_into(o, x, g));
    Some(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// Defines `fn $name(..)` that runs `$body` compiled for the widest vector unit this CPU has
/// (AVX-512, else AVX2 + FMA, else the build's baseline, SSE2 on x86-64), chosen at run time:
/// the build itself targets the baseline, so that one binary runs on every x86-64 machine.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

mod attention;
mod batch_norm;
mod dense;
mod depthwise;
mod pointwise;
pub use attention::{attention, attention_generic};
pub use batch_norm::{batch_norm_train, BatchNormInputs, BatchNormOutput};
pub use dense::conv2d_dense;
pub use depthwise::conv2d_depthwise;
pub use pointwise::conv1x1;

multiversion! {
    /// `v = silu(v)` over a slice.
    fn silu_in_place(xs: &mut [f32]) {
        for v in xs {
            *v = silu1(*v);
        }
    }
}

multiversion! {
    /// `o = silu(i)`, slices of one length.
    fn silu_into(o: &mut [f32], i: &[f32]) {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = silu1(v);
        }
    }
}

multiversion! {
    /// `o = g * silu'(x)`, slices of one length.
    fn silu_grad_into(o: &mut [f32], x: &[f32], g: &[f32]) {
        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
            let s = sigmoid1(x);
            *o = g * s * (1.0 + x * (1.0 - s));
        }
    }
}

fn contiguous(x: &FlexTensor) -> FlexTensor {
    match x.as_slice::<f32>() {
        Some(s) if s.len() == x.layout().num_elements() => x.clone(),
        _ => x.to_contiguous(),
    }
}

#[inline(always)]
fn silu1(x: f32) -> f32 {
    x * sigmoid1(x)
}

/// `1 / (1 + exp(-x))` from `e = exp(-|x|)`, with no branch (so that loops vectorise).
#[inline(always)]
fn sigmoid1(x: f32) -> f32 {
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
/// can tell apart. Written with no branch and no libm call, so the compiler vectorises it.
#[inline(always)]
pub fn exp_nonpositive(t: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to nearest
    let t = t.max(-87.0);
    let n = (t * LOG2E + ROUND) - ROUND;
    let r = t - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
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
