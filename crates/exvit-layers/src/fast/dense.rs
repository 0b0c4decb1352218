//! The dense (one group) k×k convolution as im2col + gemm on burn-flex (f32), with its own
//! gradient: the stem, and the MobileViT blocks' `conv_kxk` and `conv_fusion`, about 40% of
//! mobilevit_xxs's multiply-adds.
//!
//! Per image, `Y_b [O, P] = W [O, I·k·k] · col(X_b) [I·k·k, P]` (P output pixels); the backward
//! is `dW = Σ_b dY_b · col(X_b)ᵀ` (col rebuilt, not kept) and `dX_b = col2im(Wᵀ · dY_b)`.
//! burn's generic backward instead convolves swapped-axis views, which flex copies element by
//! element, and runs a transposed convolution for the input gradient.
//!
//! The reference is burn's `conv2d`; `tests/fast.rs` compares values and gradients and checks
//! them by finite differences.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::conv::{split, Epi, Epilogue};
use super::gemm::{padded_stride, stage, Output};
use super::{contiguous, conv_dispatch, matmul, matmul_threads, Geo, Shared};

/// `conv2d(x, w)` with one group, a square kernel, `stride` and `padding` on both axes, no
/// dilation, followed by `epi` (a bias: `bias.into()`). Fused on burn-flex f32 (under autodiff
/// too); burn's `conv2d` elsewhere.
pub fn conv2d_dense<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    epi: impl Into<Epilogue<B>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let [o, wi, kh, kw] = w.dims();
    let generic = |x, w, bias| conv2d(x, w, bias, ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1));
    let geo = Geo::new(x.dims(), o, kh, stride, padding);
    let Some(geo) = geo.filter(|g| kh == kw && wi == g.i) else {
        return epi.into().generic(x, w, generic);
    };
    conv_dispatch(x, w, epi.into(), geo, (forward, backward), generic)
}

/// `col [I·k·k, (oy1 − oy0)·Wo]` of one image `x [I, H, W]`: the output rows `oy0..oy1`; col's
/// rows are `ld` apart (at least `(oy1 − oy0)·Wo`).
fn im2col(x: &[f32], g: &Geo, (oy0, oy1): (usize, usize), col: &mut [f32], ld: usize) {
    let (k, s, p, pix) = (g.k, g.s, g.p, (oy1 - oy0) * g.wo);
    for ci in 0..g.i {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * ld..][..pix];
                let (lo, hi) = g.cols(kx);
                for oy in oy0..oy1 {
                    let out = &mut row[(oy - oy0) * g.wo..(oy - oy0 + 1) * g.wo];
                    let iy = (oy * s + ky) as isize - p as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &x[(ci * g.h + iy as usize) * g.w..][..g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let ix0 = lo * s + kx - p;
                    if s == 1 {
                        out[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (j, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = src[ix0 + j * s];
                        }
                    }
                }
            }
        }
    }
}

/// `dx [I, H, W] += col2im(dcol)`, the adjoint of [`im2col`] (dcol's rows `ld` apart).
fn col2im(dcol: &[f32], g: &Geo, dx: &mut [f32], ld: usize) {
    let (k, s, p, pix) = (g.k, g.s, g.p, g.pixels());
    for ci in 0..g.i {
        for ky in 0..k {
            for kx in 0..k {
                let row = &dcol[((ci * k + ky) * k + kx) * ld..][..pix];
                let (lo, hi) = g.cols(kx);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.ho {
                    let iy = (oy * s + ky) as isize - p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dx[(ci * g.h + iy as usize) * g.w..][..g.w];
                    let src = &row[oy * g.wo + lo..oy * g.wo + hi];
                    let ix0 = lo * s + kx - p;
                    for (j, &v) in src.iter().enumerate() {
                        dst[ix0 + j * s] += v;
                    }
                }
            }
        }
    }
}

/// Images run in parallel when there are enough of them; otherwise gemm is parallel inside.
fn per_image_parallel(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// Output pixels per forward task (an image's rows are split into tiles of about this many).
const TILE: usize = 2048;
/// The fewest output pixels a forward task gets when a small batch is split finer.
const MIN_PIXELS: usize = 128;

/// `Y_b = epi(W · col(X_b))`, in tasks of (image, band of output rows, block of output
/// channels); each task builds the col of its band (a band split into channel blocks builds it
/// once per block: cheap beside the gemm, and only at small batches).
fn forward(x: &FlexTensor, w: &FlexTensor, epi: &Epi, g: &Geo) -> FlexTensor {
    let (xc, wc) = (contiguous(x), contiguous(w));
    let (rows, pix, o, plane) = (g.rows(), g.pixels(), g.o, g.i * g.h * g.w);
    let xs = xc.as_slice::<f32>().expect("f32");
    let ws = epi.weights(wc.as_slice::<f32>().expect("f32"), rows);
    let mut y = Output::new(g.n * o * pix);
    let out = y.shared();
    let (band, chans) = split(g.n, o, g.ho, ((TILE / g.wo).max(1), MIN_PIXELS.div_ceil(g.wo)));
    let (bands, blocks) = (g.ho.div_ceil(band), o.div_ceil(chans));
    (0..g.n * bands * blocks).into_par_iter().for_each_init(Vec::new, |col: &mut Vec<f32>, t| {
        let (b, oy0, r0) = (t / (bands * blocks), (t / blocks % bands) * band, (t % blocks) * chans);
        let (oy1, m) = ((oy0 + band).min(g.ho), chans.min(o - r0));
        let cols = (oy1 - oy0) * g.wo;
        let ld = padded_stride(cols);
        col.resize(rows * ld, 0.0);
        im2col(&xs[b * plane..][..plane], g, (oy0, oy1), col, ld);
        let dst = out.at((b * o + r0) * pix + oy0 * g.wo);
        // SAFETY: channels r0..r0+m, these columns of image b's rows of y (row stride P) belong
        // to this task only; W's rows r0.. [m, rows] and col [rows, cols] are in bounds.
        unsafe {
            let accumulate = epi.fill(dst, (m, cols, pix), r0);
            matmul(
                (m, cols, rows),
                dst,
                (1, pix),
                accumulate,
                ws[r0 * rows..].as_ptr(),
                (1, rows),
                col.as_ptr(),
                (1, ld),
                1.0,
            );
            epi.finish(dst, (m, cols, pix), r0);
        }
    });
    // SAFETY: the tasks' blocks cover y, and each wrote all of its block (`Epi::fill`).
    let y = unsafe { y.assume_init() };
    FlexTensor::from_data(TensorData::new(y, [g.n, o, g.ho, g.wo]))
}

/// One backward task's buffers: col (or dcol), the padded copy of dY_b, the partial dW.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    dy: Vec<f32>,
    dw: Vec<f32>,
}

/// The gradients of `x` (when `want_x`) and of `w`.
fn backward(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    g: &Geo,
    want_x: bool,
    want_w: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (xc, wc, dc) = (contiguous(x), contiguous(w), contiguous(dy));
    let (xs, ws, ds) =
        (xc.as_slice::<f32>().expect("f32"), wc.as_slice::<f32>().expect("f32"), dc.as_slice::<f32>().expect("f32"));
    let (rows, pix, o, plane) = (g.rows(), g.pixels(), g.o, g.i * g.h * g.w);
    let mut dx = if want_x { vec![0f32; g.n * plane] } else { Vec::new() };
    let dxp = Shared(dx.as_mut_ptr());
    // Per image: dcol = Wᵀ dY_b → col2im into dX_b; dW += dY_b colᵀ (a per-task partial sum).
    // col's rows and, when P is a multiple of 256, a copy of dY_b's are `ld` apart
    // ([`padded_stride`]).
    let ld = padded_stride(pix);
    let image = |b: usize, s: &mut Scratch, threads: usize| {
        s.col.resize(rows * ld, 0.0);
        let dyb = &ds[b * o * pix..][..o * pix];
        let dyb = if ld == pix { dyb.as_ptr() } else { stage(dyb, (o, pix, pix), ld, &mut s.dy) };
        if want_w {
            im2col(&xs[b * plane..][..plane], g, (0, g.ho), &mut s.col, ld);
            s.dw.resize(o * rows, 0.0);
            // SAFETY: dY_b [O, P] (row stride ld), colᵀ (col with swapped strides) and dw
            // [O, rows] in bounds.
            unsafe {
                matmul_threads(
                    (o, rows, pix),
                    s.dw.as_mut_ptr(),
                    (1, rows),
                    true,
                    dyb,
                    (1, ld),
                    s.col.as_ptr(),
                    (ld, 1),
                    1.0,
                    threads,
                )
            };
        }
        if want_x {
            // SAFETY: Wᵀ (W with swapped strides), dY_b and col [rows, P] (row stride ld) in
            // bounds.
            unsafe {
                matmul_threads(
                    (rows, pix, o),
                    s.col.as_mut_ptr(),
                    (1, ld),
                    false,
                    ws.as_ptr(),
                    (rows, 1),
                    dyb,
                    (1, ld),
                    1.0,
                    threads,
                )
            };
            // SAFETY: image b's plane of dx belongs to this call only.
            let dxb = unsafe { std::slice::from_raw_parts_mut(dxp.at(b * plane), plane) };
            col2im(&s.col, g, dxb, ld);
        }
    };
    let dw = if per_image_parallel(g.n) {
        // Fixed chunks of images, each summed in order into its own partial dW, the partials
        // then added in chunk order: the result does not depend on rayon's scheduling, so a
        // training run is reproducible bit for bit.
        let per = g.n.div_ceil(rayon::current_num_threads());
        let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
            .into_par_iter()
            .map(|c| {
                let mut s = Scratch::default();
                (c * per..((c + 1) * per).min(g.n)).for_each(|b| image(b, &mut s, 1));
                s.dw
            })
            .collect();
        let mut parts = partials.into_iter();
        let mut dw = parts.next().unwrap_or_default();
        for p in parts {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        dw
    } else {
        let mut s = Scratch::default();
        (0..g.n).for_each(|b| image(b, &mut s, rayon::current_num_threads()));
        s.dw
    };
    let dx = want_x.then(|| FlexTensor::from_data(TensorData::new(dx, [g.n, g.i, g.h, g.w])));
    let dw = want_w.then(|| FlexTensor::from_data(TensorData::new(dw, [o, g.i, g.k, g.k])));
    (dx, dw)
}
