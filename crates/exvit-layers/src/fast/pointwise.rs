//! The 1x1 convolution (stride 1, no padding, one group) as matrix products over NCHW, fused on
//! burn-flex (f32), with its own gradient.
//!
//! Per image, `Y_b [O, HW] = W [O, I] · X_b [I, HW]`: the NCHW layout already is that matrix, so
//! nothing is copied. burn's generic weight gradient swaps the batch and channel axes of the
//! input and of the output gradient and convolves them, and flex materialises both swapped views
//! with a scalar strided copy: in a mobilevit_xxs train step the weight gradients were the
//! largest cost, half of it those copies (docs/performance.md). Here
//! `dW = Σ_b dY_b · X_bᵀ` and `dX_b = Wᵀ · dY_b` are gemm calls on strided views.
//!
//! The reference is burn's `conv2d` (every other backend, and every other conv); `tests/fast.rs`
//! compares values and gradients and checks them by finite differences.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::conv::{split, Epi, Epilogue};
use super::gemm::{matmul_staged, Output};
use super::{contiguous, conv_dispatch, matmul, Geo};

/// Columns (pixels) per rayon task of the forward and the input gradient.
const COLS: usize = 2048;
/// Input channels per weight-gradient gemm.
const DW_COLS: usize = 16;
/// The fewest columns a forward task gets when a small batch is split finer (see [`split`]).
const MIN_COLS: usize = 256;

/// `conv2d(x, w)` for a 1x1 kernel, stride 1, no padding, one group, followed by `epi` (a bias:
/// `bias.into()`): `x` `[N, I, H, W]`, `w` `[O, I, 1, 1]`. Fused on burn-flex f32 (under autodiff
/// too); burn's `conv2d` elsewhere.
pub fn conv1x1<B: Backend>(x: Tensor<B, 4>, w: Tensor<B, 4>, epi: impl Into<Epilogue<B>>) -> Tensor<B, 4> {
    let [o, wi, kh, kw] = w.dims();
    let generic = |x, w, bias| conv2d(x, w, bias, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
    let Some(geo) = Geo::new(x.dims(), o, 1, 1, 0).filter(|g| wi == g.i && kh == 1 && kw == 1) else {
        return epi.into().generic(x, w, generic);
    };
    conv_dispatch(x, w, epi.into(), geo, (forward, backward), generic)
}

/// `Y = epi(W · X)` per image, in tasks of (image, column tile, block of output channels); X_b
/// staged when its rows share cache sets (`matmul_staged`) and there is more than one image.
fn forward(x: &FlexTensor, w: &FlexTensor, epi: &Epi, g: &Geo) -> FlexTensor {
    let (n, i, o, hw) = (g.n, g.i, g.o, g.pixels());
    let (xc, wc) = (contiguous(x), contiguous(w));
    let xs = xc.as_slice::<f32>().expect("f32");
    let ws = epi.weights(wc.as_slice::<f32>().expect("f32"), i);
    let mut y = Output::new(n * o * hw);
    let out = y.shared();
    let (cols, rows) = split(n, o, hw, (COLS, MIN_COLS));
    let (tiles, blocks) = (hw.div_ceil(cols), o.div_ceil(rows));
    (0..n * tiles * blocks).into_par_iter().for_each_init(Vec::new, |scratch, t| {
        let (b, c0, r0) = (t / (tiles * blocks), (t / blocks % tiles) * cols, (t % blocks) * rows);
        let (cols, rows) = (cols.min(hw - c0), rows.min(o - r0));
        let dst = out.at((b * o + r0) * hw + c0);
        // SAFETY: rows r0.., columns c0..c0+cols of image b: this task's own block of Y; X_b's
        // columns c0.. (row stride HW) and W's rows r0.. (row stride I) are in bounds.
        unsafe {
            let accumulate = epi.fill(dst, (rows, cols, hw), r0);
            // At batch 1 the tasks are few columns wide and copying X_b costs more than the
            // cache-set conflicts it avoids (mobilevit_s and _xxs forward at batch 1: 1.016x and
            // 1.023x faster without it, 7 alternating rounds, docs/performance.md step 15).
            matmul_staged(
                (rows, cols, i),
                dst,
                (1, hw),
                accumulate,
                ws[r0 * i..].as_ptr(),
                (1, i),
                &xs[b * i * hw + c0..],
                hw,
                1.0,
                (n > 1).then_some(scratch),
            );
            epi.finish(dst, (rows, cols, hw), r0);
        }
    });
    // SAFETY: the tasks' blocks cover Y, and each wrote all of its block (`Epi::fill`).
    let y = unsafe { y.assume_init() };
    FlexTensor::from_data(TensorData::new(y, [n, o, g.h, g.w]))
}

/// `dX_b = Wᵀ · dY_b` per image (dY_b staged when its rows share cache sets: `matmul_staged`).
fn grad_input(x_shape: [usize; 4], w: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let [n, i, h, wd] = x_shape;
    let (o, hw) = (w.layout().shape()[0], h * wd);
    let (wc, gc) = (contiguous(w), contiguous(dy));
    let (ws, gs) = (wc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"));
    let mut dx = Output::new(n * i * hw);
    let out = dx.shared();
    let tiles = hw.div_ceil(COLS);
    (0..n * tiles).into_par_iter().for_each_init(Vec::new, |scratch, t| {
        let (b, c0) = (t / tiles, (t % tiles) * COLS);
        let cols = COLS.min(hw - c0);
        // SAFETY: Wᵀ is W read with swapped strides; dY_b's columns c0.. (row stride HW) are in
        // bounds; the task writes its own [I, cols] block.
        unsafe {
            matmul_staged(
                (i, cols, o),
                out.at(b * i * hw + c0),
                (1, hw),
                false,
                ws.as_ptr(),
                (i, 1),
                &gs[b * o * hw + c0..],
                hw,
                1.0,
                Some(scratch),
            )
        };
    });
    // SAFETY: the tasks' blocks cover dx, and gemm wrote each (it does not read dst here).
    FlexTensor::from_data(TensorData::new(unsafe { dx.assume_init() }, x_shape))
}

/// `dW = Σ_b dY_b · X_bᵀ`, parallel over blocks of output channels; each gemm takes
/// [`DW_COLS`] input channels at a time, so that it reads fewer rows of X in step (with all of
/// them, 24 or more rows HW apart, the packing evicted its own cache lines).
fn grad_weight(x: &FlexTensor, dy: &FlexTensor, o: usize) -> FlexTensor {
    let xs_shape = x.layout().shape();
    let (n, i, hw) = (xs_shape[0], xs_shape[1], xs_shape[2] * xs_shape[3]);
    let (xc, gc) = (contiguous(x), contiguous(dy));
    let (xs, gs) = (xc.as_slice::<f32>().expect("f32"), gc.as_slice::<f32>().expect("f32"));
    let mut dw = vec![0f32; o * i];
    let rows = o.div_ceil(4 * rayon::current_num_threads()).max(4);
    dw.par_chunks_mut(rows * i).enumerate().for_each(|(blk, dst)| {
        let (r0, m) = (blk * rows, dst.len() / i);
        for b in 0..n {
            for c0 in (0..i).step_by(DW_COLS) {
                // SAFETY: dY_b's rows r0..r0+m (row stride HW) and X_bᵀ's columns c0.. (X_b's
                // rows, with swapped strides) are in bounds; dst is this task's [m, I] block.
                unsafe {
                    matmul(
                        (m, DW_COLS.min(i - c0), hw),
                        dst[c0..].as_mut_ptr(),
                        (1, i),
                        b > 0,
                        gs[(b * o + r0) * hw..].as_ptr(),
                        (1, hw),
                        xs[(b * i + c0) * hw..].as_ptr(),
                        (hw, 1),
                        1.0,
                    )
                };
            }
        }
    });
    FlexTensor::from_data(TensorData::new(dw, [o, i, 1, 1]))
}

/// The gradients of `x` (when `want_x`) and of `w` (when `want_w`).
fn backward(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    g: &Geo,
    want_x: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    (want_x.then(|| grad_input([g.n, g.i, g.h, g.w], w, dy)), want_w.then(|| grad_weight(x, dy, g.o)))
}
