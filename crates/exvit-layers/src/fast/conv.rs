//! What the three convolutions share: their dispatch (plain flex / autodiff / generic), their
//! geometry, and one autodiff op built from a kernel's forward and backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};

use super::activation::silu_shift_rows;
use super::{back, cast, contiguous, float, is_f32, wrap, AdFlex};
use std::mem::MaybeUninit;

/// What a convolution applies to its output, per output channel: `conv(x)·scale + shift`, then
/// SiLU when `silu` — a conv, its folded eval-mode BatchNorm and its activation in one op. A
/// plain bias is `shift` alone (`Epilogue::from(bias)`).
///
/// On burn-flex f32 the kernel does it all: the scale multiplies the weights as the kernel reads
/// them, and the shift and SiLU run on each block of output while it is still in cache, in one
/// pass (without SiLU the shift fills the block before an accumulating gemm); no weight-folding
/// ops, no extra pass over the activations.
/// Elsewhere (and under autodiff) burn's ops compose the same.
///
/// # Example
/// ```
/// use burn::prelude::*;
/// use burn_flex::Flex;
/// use exvit_layers::fast::{conv1x1, Epilogue};
///
/// let dev = Default::default();
/// let x = Tensor::<Flex, 4>::ones([1, 2, 3, 3], &dev);
/// let w = Tensor::<Flex, 4>::ones([4, 2, 1, 1], &dev);
/// let epi = Epilogue {
///     scale: Some(Tensor::from_floats([1.0, 2.0, 0.5, 0.0], &dev)),
///     shift: Some(Tensor::from_floats([0.0, 0.0, 1.0, -1.0], &dev)),
///     silu: false,
/// };
/// let y = conv1x1(x, w, epi); // channels: 2, 4, 2, -1
/// assert_eq!(y.dims(), [1, 4, 3, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Epilogue<B: Backend> {
    /// Per-output-channel factor, `[O]`.
    pub scale: Option<Tensor<B, 1>>,
    /// Per-output-channel term added after the scale, `[O]`.
    pub shift: Option<Tensor<B, 1>>,
    /// SiLU last.
    pub silu: bool,
}

impl<B: Backend> From<Option<Tensor<B, 1>>> for Epilogue<B> {
    fn from(bias: Option<Tensor<B, 1>>) -> Self {
        Self { scale: None, shift: bias, silu: false }
    }
}

impl<B: Backend> Epilogue<B> {
    /// `generic(x, w, bias)` (burn's conv) with the scale folded into the weights and the shift
    /// as the bias, then SiLU: the path of every backend but burn-flex f32.
    pub(crate) fn generic(
        self,
        x: Tensor<B, 4>,
        w: Tensor<B, 4>,
        generic: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>) -> Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let o = w.dims()[0];
        let w = match self.scale {
            Some(s) => w * s.reshape([o, 1, 1, 1]),
            None => w,
        };
        Epilogue { scale: None, shift: None, silu: self.silu }.apply(generic(x, w, self.shift))
    }

    /// burn's ops: `y·scale + shift`, then SiLU (the path for autodiff).
    fn apply(self, y: Tensor<B, 4>) -> Tensor<B, 4> {
        let o = y.dims()[1];
        let y = match self.scale {
            Some(s) => y * s.reshape([1, o, 1, 1]),
            None => y,
        };
        let y = match self.shift {
            Some(b) => y + b.reshape([1, o, 1, 1]),
            None => y,
        };
        if self.silu {
            super::silu(y)
        } else {
            y
        }
    }
}

/// [`Epilogue`] as the kernels read it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Epi<'a> {
    pub(super) scale: Option<&'a [f32]>,
    pub(super) shift: Option<&'a [f32]>,
    pub(super) silu: bool,
}

impl Epi<'_> {
    /// The weights `[O, rows]` with row `r` scaled by `scale[r]`, or `w` itself.
    pub(super) fn weights<'w>(&self, w: &'w [f32], rows: usize) -> std::borrow::Cow<'w, [f32]> {
        match self.scale {
            None => w.into(),
            Some(s) => {
                let mut out = w.to_vec();
                for (row, &f) in out.chunks_exact_mut(rows).zip(s) {
                    row.iter_mut().for_each(|v| *v *= f);
                }
                out.into()
            }
        }
    }

    /// Prepares `rows` rows of `cols` elements (row stride `stride`) at `dst`, the rows of the
    /// output channels `r0..`, for the gemm; returns whether the gemm accumulates onto them.
    /// With a shift and no SiLU the rows are filled with the shift (`true`). Otherwise nothing
    /// is written (`false`): the gemm writes the block itself, and [`Epi::finish`] adds the
    /// shift with the SiLU in one pass (a training conv has neither: its zeros, or a shift
    /// written before the gemm, were one more pass over the output).
    ///
    /// # Safety
    /// The rows must be valid for writes and this caller's own.
    pub(super) unsafe fn fill(&self, dst: *mut f32, (rows, cols, stride): (usize, usize, usize), r0: usize) -> bool {
        match self.shift {
            Some(shift) if !self.silu => {
                for r in 0..rows {
                    // SAFETY: as the caller promises (the elements may be uninitialised: written,
                    // not read).
                    let row =
                        unsafe { std::slice::from_raw_parts_mut(dst.add(r * stride).cast::<MaybeUninit<f32>>(), cols) };
                    row.fill(MaybeUninit::new(shift[r0 + r]));
                }
                true
            }
            _ => false,
        }
    }

    /// With SiLU, `v = silu(v + shift)` over the rows [`Epi::fill`] prepared (the gemm's output
    /// in place).
    ///
    /// # Safety
    /// As [`Epi::fill`]; the gemm has written every element.
    pub(super) unsafe fn finish(&self, dst: *mut f32, (rows, cols, stride): (usize, usize, usize), r0: usize) {
        if self.silu {
            for r in 0..rows {
                let b = self.shift.map_or(0.0, |s| s[r0 + r]);
                // SAFETY: as the caller promises.
                silu_shift_rows(unsafe { std::slice::from_raw_parts_mut(dst.add(r * stride), cols) }, b);
            }
        }
    }
}

/// Runs a convolution on `x` `[N, I, H, W]` and `w` followed by `epi`, with the kernels
/// `forward` and `backward` of geometry `geo`: on plain burn-flex f32 the forward with the
/// epilogue in the kernel; on `Autodiff<Flex>` f32 their autodiff op (the epilogue applied after
/// it by burn's ops, so that its tensors have gradients); `generic` (burn's conv with the scale
/// folded into the weights and the shift as its bias) on every other backend or dtype.
pub(super) fn conv_dispatch<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    epi: Epilogue<B>,
    geo: Geo,
    (forward, backward): (ConvForward, ConvBackward),
    generic: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let (px, pw) = match (cast::<_, FlexTensor>(float(x)), cast::<_, FlexTensor>(float(w))) {
        (Ok(x), Ok(w)) if is_f32(&x) && is_f32(&w) => {
            let flex = |t: Option<Tensor<B, 1>>| {
                t.map(|t| contiguous(&cast::<_, FlexTensor>(float(t)).unwrap_or_else(|_| unreachable!("same backend"))))
            };
            let (scale, shift) = (flex(epi.scale), flex(epi.shift));
            fn slice(t: &FlexTensor) -> &[f32] {
                t.as_slice::<f32>().expect("f32 epilogue of an f32 conv")
            }
            let e = Epi { scale: scale.as_ref().map(slice), shift: shift.as_ref().map(slice), silu: epi.silu };
            return wrap::<B, 4, _>(forward(&x, &w, &e, &geo));
        }
        (x, w) => (back(x), back(w)),
    };
    let unwrap = |p| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
    match (cast::<_, AdFlex>(px), cast::<_, AdFlex>(pw)) {
        (Ok(x), Ok(w)) if is_f32(&x.primitive) && is_f32(&w.primitive) => {
            epi.apply(wrap::<B, 4, _>(conv_autodiff(x, w, geo, forward, backward)))
        }
        (x, w) => epi.generic(unwrap(back(x)), unwrap(back(w)), generic),
    }
}

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
    pub(super) fn rows(&self) -> usize {
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

/// How a conv's forward splits its `n` images' outputs `[O, units]` (units: pixels, or output
/// rows) among rayon tasks: returns `(units, channels)` per task. Units go in blocks of at most
/// `max_units`; when that leaves fewer than two tasks per thread (batch 1, small feature maps)
/// the blocks shrink down to `min_units`, then the output channels are split too (blocks of at
/// least 16), so that a batch of one keeps every core busy.
pub(super) fn split(n: usize, o: usize, units: usize, (max_units, min_units): (usize, usize)) -> (usize, usize) {
    let want = 2 * rayon::current_num_threads();
    let mut per = max_units.min(units).max(1);
    let tasks = |per: usize| n * units.div_ceil(per);
    if want <= 2 || tasks(per) >= want {
        return (per, o);
    }
    per = per.min(units.div_ceil(want.div_ceil(n)).max(min_units)).max(1);
    let t = tasks(per);
    let rows = if t >= want { o } else { o.div_ceil(want.div_ceil(t)).next_multiple_of(16).min(o) };
    (per, rows)
}

/// A conv kernel's forward: `(x, w, epilogue, geometry) → y`.
pub(super) type ConvForward = fn(&FlexTensor, &FlexTensor, &Epi, &Geo) -> FlexTensor;
/// Its backward: `(x, w, dy, geometry, want dx, want dw) → (dx, dw)`.
pub(super) type ConvBackward =
    fn(&FlexTensor, &FlexTensor, &FlexTensor, &Geo, bool, bool) -> (Option<FlexTensor>, Option<FlexTensor>);

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
            let y = forward(&x.primitive, &w.primitive, &Epi::default(), &geo);
            prep.finish((x.primitive, w.primitive, geo), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &w.primitive, &Epi::default(), &geo)),
    }
}
