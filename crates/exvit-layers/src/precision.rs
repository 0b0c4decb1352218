//! Mixed precision, the way `torch.autocast(dtype=torch.bfloat16)` runs a network: the convs,
//! matmuls and activations compute in the dtype of their input (bf16 under a bf16 compute
//! view, see `exvit_train::precision`), while the numerically delicate ops — BatchNorm and
//! LayerNorm (their statistics) and the attention softmax — compute in f32 and hand their result
//! back in the input's dtype. With f32 inputs (the default) every helper here is the identity.
//!
//! burn 0.21 tensors carry their dtype at run time and `cast` is differentiable (its backward
//! casts the gradient back), so the promotion costs two casts and changes no gradient path.

use burn::prelude::*;
use burn::tensor::DType;

/// `x` in `dtype`: itself when it already is (no cast node on an autodiff backend), else a
/// (differentiable) cast.
pub fn in_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}

/// Runs `f` on `x` cast to `to` (when its dtype differs), and casts the result back to `x`'s
/// dtype.
pub fn promoted<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    to: DType,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    let dtype = x.dtype();
    if dtype == to {
        return f(x);
    }
    in_dtype(f(x.cast(to)), dtype)
}

/// The dtype in which a reduction-heavy op on an input of `dtype` runs: f32 for the half
/// types, the input's own otherwise.
pub fn accumulation_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}
