//! Bilinear resize (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`, no
//! antialias) as two matmuls with constant interpolation matrices: `out = R_h · x · R_wᵀ` per
//! channel.
//!
//! Why not burn's `interpolate`: burn 0.21's cubecl backends (wgpu and CUDA) have no backward for
//! bilinear interpolation (`burn-cubecl-0.21.0/src/kernel/interpolate/base.rs` panics, on the
//! device thread), so training a MobileViT at a resolution whose feature maps are not multiples
//! of the patch size (cvnets' multi-scale 160/192/…, or 200) would fail on a GPU; the wgpu suite
//! found it. Matmuls are differentiable on every backend, the maps resized are small (the
//! deepest stages), and the values are PyTorch's within float rounding (tested below and by the
//! timm parity fixtures at size 200 and the training-step fixture at 96).

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::precision::in_dtype;

/// The `[n_out, n_in]` matrix of PyTorch's bilinear weights along one axis (align_corners =
/// False: source coordinate `(o + ½)·n_in/n_out − ½`, clamped at 0; the right neighbour clamped
/// at the edge).
pub fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    assert!(n_in > 0 && n_out > 0, "bilinear_matrix: empty axis ({n_in} -> {n_out})");
    let scale = n_in as f32 / n_out as f32;
    let mut m = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l1 = src - i0 as f32;
        m[o * n_in + i0] += 1.0 - l1;
        m[o * n_in + i1] += l1;
    }
    m
}

/// Resizes `[B, C, H, W]` to `[B, C, size[0], size[1]]` bilinearly, differentiably on any
/// backend, in `x`'s dtype.
pub fn resize_bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let [oh, ow] = size;
    let (dev, dtype) = (x.device(), x.dtype());
    let matrix = |n_in: usize, n_out: usize| {
        // `[n_in, n_out]`: the transpose, so that rows of x multiply on the left.
        let m = Tensor::<B, 2>::from_data(TensorData::new(bilinear_matrix(n_in, n_out), [n_out, n_in]), &dev);
        in_dtype(m.transpose(), dtype)
    };
    let x = if ow != w { x.reshape([b * c * h, w]).matmul(matrix(w, ow)).reshape([b, c, h, ow]) } else { x };
    if oh != h {
        let t = x.swap_dims(2, 3).reshape([b * c * ow, h]).matmul(matrix(h, oh));
        t.reshape([b, c, ow, oh]).swap_dims(2, 3)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use burn::tensor::Distribution;
    use burn_flex::{Flex, FlexDevice};

    type AD = Autodiff<Flex>;

    fn burn_bilinear<Bk: Backend>(x: Tensor<Bk, 4>, size: [usize; 2]) -> Tensor<Bk, 4> {
        interpolate(x, size, InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false))
    }

    fn max_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    /// Against burn-flex's own bilinear kernel (itself checked against PyTorch by the parity
    /// fixtures), up and down, both axes, values and gradients.
    #[test]
    fn equals_burns_bilinear_kernel_values_and_gradients() {
        let dev = FlexDevice;
        for ((h, w), size) in
            [((1, 1), [2, 2]), ((3, 3), [4, 4]), ((5, 7), [6, 8]), ((26, 26), [25, 25]), ((4, 6), [3, 6])]
        {
            <AD as Backend>::seed(&dev, (h * 31 + w) as u64);
            let x = Tensor::<AD, 4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let up = Tensor::<AD, 4>::random([2, 3, size[0], size[1]], Distribution::Normal(0.0, 1.0), &dev);
            let (a, b) = (resize_bilinear(x.clone(), size), burn_bilinear(x.clone(), size));
            assert_eq!(a.dims(), [2, 3, size[0], size[1]]);
            // burn-flex computes the source coordinates in f64, PyTorch's CPU kernel (and this
            // matrix) in f32: at 26 -> 25 the weights then differ by ~2e-6 (the coordinate's
            // rounding, ~24 ulp of 1.04), times neighbours up to ~4 apart.
            let d = max_diff(a.clone(), b.clone());
            assert!(d < 3e-5, "{h}x{w} -> {size:?}: values differ by {d:e}");
            let ga = x.grad(&(a * up.clone()).sum().backward()).unwrap();
            let gb = x.grad(&(b * up).sum().backward()).unwrap();
            let d = max_diff(ga, gb);
            assert!(d < 1e-5, "{h}x{w} -> {size:?}: gradients differ by {d:e}");
        }
    }

    #[test]
    fn rows_of_the_matrix_sum_to_one() {
        for (i, o) in [(1, 2), (3, 4), (26, 25), (7, 3), (5, 5)] {
            let m = bilinear_matrix(i, o);
            for row in m.chunks(i) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{i} -> {o}: {row:?}");
            }
        }
        // Same size: the identity.
        assert_eq!(bilinear_matrix(3, 3), vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
    }
}
