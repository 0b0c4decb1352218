//! The depthwise k×k convolution (groups = channels, one filter per channel) on burn-flex
//! (f32), with its own gradient: direct loops, one task per channel plane, every inner loop a
//! contiguous (stride 1) or strided row update that the compiler vectorises.
//!
//! burn's generic weight gradient runs one convolution per channel over swapped-axis copies,
//! and its input gradient a grouped transposed convolution. The reference is burn's `conv2d`;
//! `tests/fast.rs` compares values and gradients and checks them by finite differences.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::activation::silu1;
use super::conv::{Epi, Epilogue};
use super::gemm::{init, Output};
use super::{contiguous, conv_dispatch, Geo, Shared};
use std::mem::MaybeUninit;

/// `conv2d(x, w)` with `groups = C`, `w` `[C, 1, k, k]`, `stride` and `padding` on both axes,
/// followed by `epi` (a bias: `bias.into()`). Fused on burn-flex f32 (under autodiff too); burn's
/// `conv2d` elsewhere.
pub fn conv2d_depthwise<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    epi: impl Into<Epilogue<B>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let [c, wi, kh, kw] = w.dims();
    let generic = |x, w, bias| conv2d(x, w, bias, ConvOptions::new([stride; 2], [padding; 2], [1, 1], c));
    let geo = Geo::new(x.dims(), c, kh, stride, padding);
    let Some(geo) = geo.filter(|g| kh == kw && wi == 1 && g.i == c) else {
        return epi.into().generic(x, w, generic);
    };
    conv_dispatch(x, w, epi.into(), geo, (forward, backward), generic)
}

/// The input plane `plane [H, W]` zero-padded by `p` on every side, each padded row stored as
/// its `s` phases (columns q, q + s, q + 2s, … for q < s, each `m = ⌈(W + 2p) / s⌉` long) in
/// `buf`: every tap of a strided conv then reads a contiguous run, with no edge cases.
fn pad_into_phases(buf: &mut Vec<f32>, plane: &[f32], g: &Geo) -> usize {
    let (s, p) = (g.s, g.p);
    let m = (g.w + 2 * p).div_ceil(s);
    buf.clear();
    buf.resize((g.h + 2 * p) * s * m, 0.0);
    for (y, src) in plane.chunks_exact(g.w).enumerate() {
        let dst = &mut buf[(y + p) * s * m..][..s * m];
        if s == 1 {
            dst[p..p + g.w].copy_from_slice(src);
        } else if s == 2 {
            // Padded column c = x + p goes to phase c mod 2 at c / 2: pixels 2i and 2i + 1 go
            // to index i of two fixed slices (no division per pixel: with one, this copy was
            // ~6% of a mobilevit_xxs forward at batch 16).
            let (even, odd) = (p % 2 * m + p / 2, (p + 1) % 2 * m + p.div_ceil(2));
            let pairs = src.chunks_exact(2);
            if let [last] = pairs.remainder() {
                dst[even + g.w / 2] = *last;
            }
            let n = g.w / 2;
            let (a, b) = if even < odd {
                let (lo, hi) = dst.split_at_mut(odd);
                (&mut lo[even..even + n], &mut hi[..n])
            } else {
                let (lo, hi) = dst.split_at_mut(even);
                (&mut hi[..n], &mut lo[odd..odd + n])
            };
            for ((a, b), pair) in a.iter_mut().zip(b.iter_mut()).zip(pairs) {
                *a = pair[0];
                *b = pair[1];
            }
        } else {
            for (x, &v) in src.iter().enumerate() {
                let c = x + p;
                dst[c % s * m + c / s] = v;
            }
        }
    }
    m
}

multiversion! {
    /// One output plane `out [Ho, Wo]`, already filled with the shift, of the padded, phased
    /// input plane `buf` (`pad_into_phases`, phase length `m`) and its `k×k` filter `wk`, then
    /// SiLU when `silu`. A 3×3 filter (MobileViT's) sums its nine taps in registers and writes
    /// each output once; other sizes add one tap's row at a time. One compiled body for the
    /// whole plane, so that the short rows of the small feature maps pay no call per row.
    fn plane_forward(out: &mut [f32], buf: &[f32], m: usize, wk: &[f32], silu: bool, g: &Geo) {
        let (s, wo) = (g.s, g.wo);
        let (rows, ks) = (s * m, g.k);
        // Tap (ky, kx) of output row oy reads padded row oy·s + ky, phase kx mod s, from kx / s.
        let at = |kx: usize| kx % s * m + kx / s;
        for (oy, row) in out.chunks_exact_mut(wo).enumerate() {
            let b = &buf[oy * s * rows..];
            if ks == 3 {
                let w: &[f32; 9] = wk[..9].try_into().expect("3x3 filter");
                let (o0, o1, o2) = (at(0), at(1), at(2));
                let (r0, r1, r2) = (b, &b[rows..], &b[2 * rows..]);
                let (a0, a1, a2) = (&r0[o0..o0 + wo], &r0[o1..o1 + wo], &r0[o2..o2 + wo]);
                let (b0, b1, b2) = (&r1[o0..o0 + wo], &r1[o1..o1 + wo], &r1[o2..o2 + wo]);
                let (c0, c1, c2) = (&r2[o0..o0 + wo], &r2[o1..o1 + wo], &r2[o2..o2 + wo]);
                for j in 0..wo {
                    let mut acc = row[j];
                    acc += w[0] * a0[j] + w[1] * a1[j] + w[2] * a2[j];
                    acc += w[3] * b0[j] + w[4] * b1[j] + w[5] * b2[j];
                    acc += w[6] * c0[j] + w[7] * c1[j] + w[8] * c2[j];
                    row[j] = acc;
                }
            } else {
                for ky in 0..ks {
                    for kx in 0..ks {
                        let (a, src) = (wk[ky * ks + kx], &b[ky * rows + at(kx)..][..wo]);
                        for (o, &v) in row.iter_mut().zip(src) {
                            *o += a * v;
                        }
                    }
                }
            }
            if silu {
                for v in row.iter_mut() {
                    *v = silu1(*v);
                }
            }
        }
    }
}

multiversion! {
    /// Adds to `dw [k×k]` this plane's weight gradient: tap (ky, kx) gains `Σ dY[oy, ox] ·
    /// x[oy·s + ky − p, ox·s + kx − p]`, from the output gradient `grad [Ho, Wo]` and the padded,
    /// phased input plane `buf` (`pad_into_phases`, phase length `m`), where every tap reads a
    /// contiguous run as in [`plane_forward`]. A 3×3 filter keeps its nine sums in vector
    /// registers over the whole plane ([`GRAD_LANES`] lanes each); other sizes take one tap's
    /// row at a time.
    fn plane_grad_w(dw: &mut [f32], grad: &[f32], buf: &[f32], m: usize, g: &Geo) {
        let (s, wo, ks) = (g.s, g.wo, g.k);
        let rows = s * m;
        let at = |kx: usize| kx % s * m + kx / s;
        if ks == 3 {
            const L: usize = GRAD_LANES;
            let offs = [at(0), at(1), at(2)];
            let full = wo / L * L;
            let mut acc = [[0f32; L]; 9];
            let mut tail = [0f32; 9];
            for (oy, gr) in grad.chunks_exact(wo).enumerate() {
                let b = &buf[oy * s * rows..];
                for j0 in (0..full).step_by(L) {
                    let gv: &[f32; L] = gr[j0..j0 + L].try_into().expect("lanes");
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let src: &[f32; L] = b[ky * rows + offs[kx] + j0..][..L].try_into().expect("lanes");
                            let a = &mut acc[ky * 3 + kx];
                            for l in 0..L {
                                a[l] += gv[l] * src[l];
                            }
                        }
                    }
                }
                for j in full..wo {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            tail[ky * 3 + kx] += gr[j] * b[ky * rows + offs[kx] + j];
                        }
                    }
                }
            }
            for ((d, a), t) in dw.iter_mut().zip(&acc).zip(tail) {
                *d += a.iter().sum::<f32>() + t;
            }
        } else {
            for (oy, gr) in grad.chunks_exact(wo).enumerate() {
                let b = &buf[oy * s * rows..];
                for ky in 0..ks {
                    for kx in 0..ks {
                        let src = &b[ky * rows + at(kx)..][..wo];
                        dw[ky * ks + kx] += gr.iter().zip(src).map(|(a, b)| a * b).sum::<f32>();
                    }
                }
            }
        }
    }
}

/// Lanes of each of [`plane_grad_w`]'s nine sums: eight, so that the nine fit the sixteen
/// vector registers of AVX2 with room for the operands.
const GRAD_LANES: usize = 8;

multiversion! {
    /// `o[j·s] += a · v[j]`.
    fn scatter_axpy(o: &mut [f32], v: &[f32], a: f32, s: usize) {
        if s == 1 {
            for (o, &v) in o.iter_mut().zip(v) {
                *o += a * v;
            }
        } else {
            for (j, &v) in v.iter().enumerate() {
                o[j * s] += a * v;
            }
        }
    }
}

/// Calls `f(ky, kx, oy, iy, lo, hi, ix0)` for every kernel tap and output row whose input row
/// `iy` is inside the image, with the output columns `lo..hi` that read input columns
/// `ix0, ix0 + s, …`.
fn taps(g: &Geo, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize)) {
    for ky in 0..g.k {
        for kx in 0..g.k {
            let (lo, hi) = g.cols(kx);
            if lo >= hi {
                continue;
            }
            let ix0 = lo * g.s + kx - g.p;
            for oy in 0..g.ho {
                let iy = (oy * g.s + ky) as isize - g.p as isize;
                if iy >= 0 && (iy as usize) < g.h {
                    f(ky, kx, oy, iy as usize, lo, hi, ix0);
                }
            }
        }
    }
}

fn forward(x: &FlexTensor, w: &FlexTensor, epi: &Epi, g: &Geo) -> FlexTensor {
    let (xc, wc) = (contiguous(x), contiguous(w));
    let (c, kk, hw, pix) = (g.i, g.k * g.k, g.h * g.w, g.pixels());
    let xs = xc.as_slice::<f32>().expect("f32");
    let ws = epi.weights(wc.as_slice::<f32>().expect("f32"), kk);
    let mut y = Output::new(g.n * c * pix);
    // Small planes (8x8 at 256) go several to a task.
    y.chunks(pix).with_min_len(PIXELS_PER_TASK.div_ceil(pix)).enumerate().for_each_init(Vec::new, |buf, (t, out)| {
        let ch = t % c;
        out.fill(MaybeUninit::new(epi.shift.map_or(0.0, |b| b[ch])));
        // SAFETY: just filled.
        let out = unsafe { init(out) };
        let m = pad_into_phases(buf, &xs[t * hw..(t + 1) * hw], g);
        plane_forward(out, buf, m, &ws[ch * kk..(ch + 1) * kk], epi.silu, g);
    });
    // SAFETY: the chunks cover y, each filled above.
    let y = unsafe { y.assume_init() };
    FlexTensor::from_data(TensorData::new(y, [g.n, c, g.ho, g.wo]))
}

/// The fewest output pixels per forward task.
const PIXELS_PER_TASK: usize = 1024;

/// The gradients of `x` (when `want_x`) and of `w` (when `want_w`): one task per channel, over
/// all images. The weight gradient reads the padded, phased input plane as the forward does
/// ([`plane_grad_w`]); the input gradient is, at stride 1, the forward's kernel on the padded
/// output gradient, and otherwise a scatter of each tap's rows.
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
    let (c, k, hw, pix) = (g.i, g.k, g.h * g.w, g.pixels());
    let mut dx = if want_x { vec![0f32; g.n * c * hw] } else { Vec::new() };
    let dxp = Shared(dx.as_mut_ptr());
    let mut dw = vec![0f32; c * k * k];
    // At stride 1 the input gradient is the forward conv of the padded output gradient with the
    // flipped filter (padding k − 1 − p), which sums its taps in registers.
    let transposed = (g.s == 1 && g.p < k).then(|| Geo::new([g.n, c, g.ho, g.wo], c, k, 1, k - 1 - g.p)).flatten();
    dw.par_chunks_mut(k * k).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(buf, flipped), (ch, dwc)| {
            flipped.clear();
            flipped.extend(ws[ch * k * k..(ch + 1) * k * k].iter().rev());
            for b in 0..g.n {
                let t = b * c + ch;
                let (plane, grad) = (&xs[t * hw..(t + 1) * hw], &ds[t * pix..(t + 1) * pix]);
                if want_w {
                    let m = pad_into_phases(buf, plane, g);
                    plane_grad_w(dwc, grad, buf, m, g);
                }
                if want_x {
                    // SAFETY: the plane (b, ch) of dx is written by this task only.
                    let dxc = unsafe { std::slice::from_raw_parts_mut(dxp.at(t * hw), hw) };
                    if let Some(gt) = &transposed {
                        let m = pad_into_phases(buf, grad, gt);
                        plane_forward(dxc, buf, m, flipped, false, gt);
                    } else {
                        taps(g, |ky, kx, oy, iy, lo, hi, ix0| {
                            let wv = ws[(ch * k + ky) * k + kx];
                            scatter_axpy(&mut dxc[iy * g.w + ix0..], &grad[oy * g.wo + lo..oy * g.wo + hi], wv, g.s);
                        });
                    }
                }
            }
        },
    );
    let dx = want_x.then(|| FlexTensor::from_data(TensorData::new(dx, [g.n, c, g.h, g.w])));
    (dx, want_w.then(|| FlexTensor::from_data(TensorData::new(dw, [c, 1, k, k]))))
}
