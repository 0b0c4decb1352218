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

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::attention::{matmul, Shared};
use super::{contiguous, conv_dispatch, AdFlex};

/// The geometry of one conv call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geo {
    pub(super) n: usize,
    pub(super) i: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) k: usize,
    pub(super) s: usize,
    pub(super) p: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Geo {
    pub(super) fn new([n, i, h, w]: [usize; 4], o: usize, k: usize, s: usize, p: usize) -> Option<Self> {
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
    pub(super) fn pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// The output columns `ox` whose input column `ox·s + kx − p` is inside the image.
    pub(super) fn cols(&self, kx: usize) -> (usize, usize) {
        let lo = if kx >= self.p { 0 } else { (self.p - kx).div_ceil(self.s) };
        let hi = if self.w + self.p > kx { ((self.w + self.p - kx - 1) / self.s + 1).min(self.wo) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// `conv2d(x, w, bias)` with one group, a square kernel, `stride` and `padding` on both axes,
/// no dilation. Fused on burn-flex f32 (under autodiff too); burn's `conv2d` elsewhere.
pub fn conv2d_dense<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let [o, wi, kh, kw] = w.dims();
    let generic = |x, w, bias| conv2d(x, w, bias, ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1));
    let geo = Geo::new(x.dims(), o, kh, stride, padding);
    let Some(geo) = geo.filter(|g| kh == kw && wi == g.i) else {
        return generic(x, w, bias);
    };
    conv_dispatch(x, w, bias, |x, w, b| forward(x, w, b, &geo), |x, w| autodiff(x, w, geo), generic)
}

/// `col [I·k·k, (oy1 − oy0)·Wo]` of one image `x [I, H, W]`: the output rows `oy0..oy1`.
fn im2col(x: &[f32], g: &Geo, (oy0, oy1): (usize, usize), col: &mut [f32]) {
    let (k, s, p, pix) = (g.k, g.s, g.p, (oy1 - oy0) * g.wo);
    for ci in 0..g.i {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * pix..][..pix];
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

/// `dx [I, H, W] += col2im(dcol)`, the adjoint of [`im2col`].
fn col2im(dcol: &[f32], g: &Geo, dx: &mut [f32]) {
    let (k, s, p, pix) = (g.k, g.s, g.p, g.pixels());
    for ci in 0..g.i {
        for ky in 0..k {
            for kx in 0..k {
                let row = &dcol[((ci * k + ky) * k + kx) * pix..][..pix];
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

fn forward(x: &FlexTensor, w: &FlexTensor, bias: Option<&[f32]>, g: &Geo) -> FlexTensor {
    let (xc, wc) = (contiguous(x), contiguous(w));
    let (xs, ws) = (xc.as_slice::<f32>().expect("f32"), wc.as_slice::<f32>().expect("f32"));
    let (rows, pix, o, plane) = (g.rows(), g.pixels(), g.o, g.i * g.h * g.w);
    let mut y = vec![0f32; g.n * o * pix];
    let out = Shared(y.as_mut_ptr());
    // Tasks: (image, band of output rows), each with its own slice of col.
    let band = (TILE / g.wo).clamp(1, g.ho);
    let bands = g.ho.div_ceil(band);
    (0..g.n * bands).into_par_iter().for_each_init(Vec::new, |col: &mut Vec<f32>, t| {
        let (b, oy0) = (t / bands, (t % bands) * band);
        let oy1 = (oy0 + band).min(g.ho);
        let cols = (oy1 - oy0) * g.wo;
        col.resize(rows * cols, 0.0);
        im2col(&xs[b * plane..][..plane], g, (oy0, oy1), col);
        let dst = out.at(b * o * pix + oy0 * g.wo);
        if let Some(bs) = bias {
            for (r, &v) in bs.iter().enumerate() {
                // SAFETY: these columns of image b's rows of y belong to this task only.
                unsafe { std::slice::from_raw_parts_mut(dst.add(r * pix), cols) }.fill(v);
            }
        }
        // SAFETY: W [O, rows], col [rows, cols] and the task's [O, cols] block of y (row
        // stride P) are in bounds.
        unsafe {
            matmul((o, cols, rows), dst, (1, pix), bias.is_some(), ws.as_ptr(), (1, rows), col.as_ptr(), (1, cols), 1.0)
        };
    });
    FlexTensor::from_data(TensorData::new(y, [g.n, o, g.ho, g.wo]))
}

/// gemm on one thread or on rayon's pool.
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_threads(
    mnk: (usize, usize, usize),
    dst: *mut f32,
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    lhs_s: (usize, usize),
    rhs: *const f32,
    rhs_s: (usize, usize),
    threads: usize,
) {
    if threads <= 1 {
        return matmul(mnk, dst, dst_s, accumulate, lhs, lhs_s, rhs, rhs_s, 1.0);
    }
    let (m, n, k) = mnk;
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_s.0 as isize,
        dst_s.1 as isize,
        accumulate,
        lhs,
        lhs_s.0 as isize,
        lhs_s.1 as isize,
        rhs,
        rhs_s.0 as isize,
        rhs_s.1 as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(threads),
    )
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
    let image = |b: usize, col: &mut Vec<f32>, dw: &mut Vec<f32>, threads: usize| {
        col.resize(rows * pix, 0.0);
        let dyb = ds[b * o * pix..].as_ptr();
        if want_w {
            im2col(&xs[b * plane..][..plane], g, (0, g.ho), col);
            dw.resize(o * rows, 0.0);
            // SAFETY: dY_b [O, P], colᵀ (col with swapped strides) and dw [O, rows] in bounds.
            unsafe {
                gemm_threads(
                    (o, rows, pix),
                    dw.as_mut_ptr(),
                    (1, rows),
                    true,
                    dyb,
                    (1, pix),
                    col.as_ptr(),
                    (pix, 1),
                    threads,
                )
            };
        }
        if want_x {
            // SAFETY: Wᵀ (W with swapped strides), dY_b and col [rows, P] in bounds.
            unsafe {
                gemm_threads(
                    (rows, pix, o),
                    col.as_mut_ptr(),
                    (1, pix),
                    false,
                    ws.as_ptr(),
                    (rows, 1),
                    dyb,
                    (1, pix),
                    threads,
                )
            };
            // SAFETY: image b's plane of dx belongs to this call only.
            let dxb = unsafe { std::slice::from_raw_parts_mut(dxp.at(b * plane), plane) };
            col2im(col, g, dxb);
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
                let (mut col, mut dw) = (Vec::new(), Vec::new());
                (c * per..((c + 1) * per).min(g.n)).for_each(|b| image(b, &mut col, &mut dw, 1));
                dw
            })
            .collect();
        let mut parts = partials.into_iter();
        let mut dw = parts.next().unwrap_or_default();
        for p in parts {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        dw
    } else {
        let (mut col, mut dw) = (Vec::new(), Vec::new());
        (0..g.n).for_each(|b| image(b, &mut col, &mut dw, rayon::current_num_threads()));
        dw
    };
    let dx = want_x.then(|| FlexTensor::from_data(TensorData::new(dx, [g.n, g.i, g.h, g.w])));
    let dw = want_w.then(|| FlexTensor::from_data(TensorData::new(dw, [o, g.i, g.k, g.k])));
    (dx, dw)
}

/// A k×k conv kernel's forward: `(x, w, bias, geometry) → y`.
pub(super) type ConvForward = fn(&FlexTensor, &FlexTensor, Option<&[f32]>, &Geo) -> FlexTensor;
/// Its backward: `(x, w, dy, geometry, want dx, want dw) → (dx, dw)`.
pub(super) type ConvBackward =
    fn(&FlexTensor, &FlexTensor, &FlexTensor, &Geo, bool, bool) -> (Option<FlexTensor>, Option<FlexTensor>);

fn autodiff(x: AdFlex, w: AdFlex, geo: Geo) -> AdFlex {
    conv_autodiff(x, w, geo, forward, backward)
}

/// The autodiff op of a bias-free conv from its two kernels; the input, the weight and the
/// geometry are the state, and only the gradients the graph needs are computed.
pub(super) fn conv_autodiff(x: AdFlex, w: AdFlex, geo: Geo, forward: ConvForward, backward: ConvBackward) -> AdFlex {
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
