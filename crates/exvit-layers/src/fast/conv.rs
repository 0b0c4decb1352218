//! What the three convolutions share: their dispatch (plain flex / autodiff / generic), their
//! geometry, and one autodiff op built from a kernel's forward and backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};

use super::{back, cast, contiguous, is_f32, wrap, AdFlex};

/// Runs a convolution on `x` `[N, I, H, W]`, `w` and an optional per-output-channel `bias`
/// with the kernels `forward` and `backward` of geometry `geo`: on plain burn-flex f32 the
/// forward with the bias in the kernel; on `Autodiff<Flex>` f32 their autodiff op (the bias added
/// after it by burn, so that it has its gradient); `generic` (burn's ops) on every other backend
/// or dtype.
pub(super) fn conv_dispatch<B: Backend>(
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

/// A conv kernel's forward: `(x, w, bias, geometry) → y`.
pub(super) type ConvForward = fn(&FlexTensor, &FlexTensor, Option<&[f32]>, &Geo) -> FlexTensor;
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
            let y = forward(&x.primitive, &w.primitive, None, &geo);
            prep.finish((x.primitive, w.primitive, geo), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.primitive, &w.primitive, None, &geo)),
    }
}
