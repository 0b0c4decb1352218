//! Linear centered kernel alignment (Kornblith et al. 2019):
//! `CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)` on column-centred `X: [n, p]`, `Y: [n, q]`.
//! Computed in feature space (`p x q` products, never `n x n`), so 50k images cost no more
//! memory than their features. It is 1 for identical features and invariant to orthogonal
//! transforms and isotropic scaling of either side (tested).

use burn::prelude::*;

use crate::error::ProbeError;
use crate::matrix::Matrix;

/// Linear CKA of two feature matrices with the same rows (images), on their backend.
pub fn linear_cka<B: Backend>(x: Tensor<B, 2>, y: Tensor<B, 2>) -> f64 {
    let x = x.clone() - x.mean_dim(0);
    let y = y.clone() - y.mean_dim(0);
    let fro2 = |t: Tensor<B, 2>| t.powf_scalar(2.0).sum().into_scalar().elem::<f64>();
    let xy = fro2(y.clone().transpose().matmul(x.clone()));
    let xx = fro2(x.clone().transpose().matmul(x)).sqrt();
    let yy = fro2(y.clone().transpose().matmul(y)).sqrt();
    if xx == 0.0 || yy == 0.0 {
        return f64::NAN;
    }
    xy / (xx * yy)
}

/// [`linear_cka`] of two host matrices, on `device`.
pub fn linear_cka_host<B: Backend>(x: &Matrix, y: &Matrix, device: &B::Device) -> Result<f64, ProbeError> {
    if x.rows != y.rows {
        return Err(ProbeError::Config(format!(
            "CKA of {} rows against {} rows: the images must be the same",
            x.rows, y.rows
        )));
    }
    Ok(linear_cka(x.to_tensor::<B>(device), y.to_tensor::<B>(device)))
}
