//! Fused kernels for the CPU backend (burn-flex, f32), with their own gradients. Every other
//! backend, dtype or layout takes burn's generic path, which stays the reference the tests
//! compare against (`tests/fast.rs`: values and finite-difference gradients).
//!
//! The layers stay generic over the backend: each op checks at run time whether `B` is `Flex`
//! or `Autodiff<Flex>` (a `TypeId` comparison, resolved per call at no measurable cost) and
//! moves the tensor primitive into the fused kernel; no backend trait bound changes. This file
//! holds that dispatch (`cast`, `back`, `wrap`); the rest is one module per concern:
//! `simd` (`multiversion!`), `gemm` (strided gemm on rayon), `conv` (the convolutions' shared
//! dispatch and autodiff op), `activation` (SiLU and the vectorisable `exp`), and the kernels
//! [`attention`], [`conv1x1`], [`conv2d_dense`], [`conv2d_depthwise`], [`batch_norm_train`], [`layer_norm`], [`linear`], and the probe's host-slice kernels [`xent_line`], [`xent_grad`], [`matmul_nn`] and [`matmul_tn`].

use std::any::Any;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

#[macro_use]
mod simd;
mod activation;
mod attention;
mod batch_norm;
mod blocked;
mod conv;
mod dense;
mod depthwise;
mod gemm;
mod layer_norm;
mod linear;
mod patches;
mod pointwise;
mod pool;
mod xent;
pub use attention::{attention, attention_generic};
pub use batch_norm::{batch_norm_train, BatchNormInputs, BatchNormOutput};
pub use dense::conv2d_dense;
pub use depthwise::conv2d_depthwise;
pub use gemm::{matmul_nn, matmul_tn};
pub use layer_norm::{layer_norm, LayerNormInputs};
pub use linear::{linear, linear_generic};
pub use patches::{fold_patches, unfold_patches};
pub use pointwise::conv1x1;
pub use pool::on_pool;
pub use xent::{xent_grad, xent_line};

pub use activation::{exp_nonpositive, silu, silu_backward, silu_forward};
pub use conv::Epilogue;
use conv::{conv_dispatch, Geo};
use gemm::{matmul, matmul_threads, Shared};

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

/// Undoes a failed or unused cast back to the backend's primitive.
fn back<P: 'static, T: 'static>(r: Result<T, P>) -> P {
    match r {
        Ok(t) => cast::<T, P>(t).unwrap_or_else(|_| unreachable!("T is P")),
        Err(p) => p,
    }
}

/// The primitive of a float tensor (the start of every dispatch; [`wrap`] is the way back).
fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => p,
        TensorPrimitive::QFloat(_) => unreachable!("a float tensor's primitive is Float unless quantized"),
    }
}

fn wrap<B: Backend, const D: usize, T: 'static>(y: T) -> Tensor<B, D> {
    match cast::<_, B::FloatTensorPrimitive>(y) {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(p)),
        Err(_) => unreachable!("checked by the caller's cast"),
    }
}

/// Whether `B` is burn-flex, the CPU backend whose tensors are host memory: a `TensorData`
/// taken from one of its contiguous tensors, or given to it, moves the buffer without a copy.
/// Callers with host kernels of their own (the probe's line search) choose their path by it.
pub fn host_backend<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>()
}

fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
}

/// The element-wise sum of per-task partial vectors (each `len` long), added in task order.
///
/// A rayon `reduce` would combine them along its split tree, whose shape follows work stealing:
/// the floating-point sum then depends on the threads' timing, and two runs of the same training
/// step could differ in the last bit (a resumed run must equal the uninterrupted one, bit for
/// bit; `exvit-train`'s `tests/replica.rs` caught it under load). Collect the partials in order
/// (`collect::<Vec<_>>()` on an indexed parallel iterator), then sum them here.
fn sum_in_order(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for p in parts {
        add_row(&mut acc, &p);
    }
    acc
}

multiversion! {
    /// `acc += row`, element-wise (the kernels' running column sums and [`sum_in_order`]).
    fn add_row(acc: &mut [f32], row: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

fn contiguous(x: &FlexTensor) -> FlexTensor {
    match x.as_slice::<f32>() {
        Some(s) if s.len() == x.layout().num_elements() => x.clone(),
        _ => x.to_contiguous(),
    }
}
