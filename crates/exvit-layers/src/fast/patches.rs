//! MobileViT's unfold (feature map → patch-token sequences) and fold (its inverse) on burn-flex
//! f32, as direct gathers, with their own gradients (each is the other's adjoint: both are
//! permutations).
//!
//! burn's path reshapes to six axes, permutes and reshapes back; flex materialises the
//! permuted view with its generic strided iterator, one index computation per element: at
//! batch 1 the two copies were ~4 % of a mobilevit_xxs forward (docs/performance.md). Here the
//! unfold is one task per (image, position in the patch), the fold one per channel plane.
//!
//! The reference is the reshape/permute path (`mobilevit_block::unfold`'s generic branch);
//! `tests/fast.rs` compares values and gradients.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::gemm::Output;
use super::{back, cast, contiguous, float, is_f32, wrap, AdFlex};

/// The geometry: `b` images of `c` channels, `nh × nw` patches of `p × p` pixels.
#[derive(Debug, Clone, Copy)]
struct Patches {
    b: usize,
    c: usize,
    nh: usize,
    nw: usize,
    p: usize,
}

impl Patches {
    fn tokens(&self) -> usize {
        self.nh * self.nw
    }
    fn map(&self) -> [usize; 4] {
        [self.b, self.c, self.nh * self.p, self.nw * self.p]
    }
    fn seqs(&self) -> [usize; 3] {
        [self.b * self.p * self.p, self.tokens(), self.c]
    }
    /// The pixel (offset in a channel plane) of token `n` at position `(ph, pw)` of its patch.
    fn pixel(&self, n: usize, ph: usize, pw: usize) -> usize {
        let (i, j) = (n / self.nw, n % self.nw);
        (i * self.p + ph) * (self.nw * self.p) + j * self.p + pw
    }
}

/// `[B, C, nh·p, nw·p]` → `[B·p², nh·nw, C]` (sequence `(b, ph, pw)`, token `(i, j)`, channel):
/// `x.reshape([B, C, nh, p, nw, p]).permute([0, 3, 5, 2, 4, 1])`. The map must already be a
/// whole number of patches. Fused on burn-flex f32 (under autodiff too); burn's ops elsewhere.
pub fn unfold_patches<B: Backend>(x: Tensor<B, 4>, p: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = x.dims();
    assert!(p > 0 && h % p == 0 && w % p == 0, "unfold_patches: a {h}x{w} map is not whole {p}x{p} patches");
    let g = Patches { b, c, nh: h / p, nw: w / p, p };
    let generic = |x: Tensor<B, 4>| x.reshape([b, c, g.nh, p, g.nw, p]).permute([0, 3, 5, 2, 4, 1]).reshape(g.seqs());
    permutation(x, g, (unfold, fold), generic)
}

/// The inverse of [`unfold_patches`]: `[B·p², nh·nw, C]` → `[B, C, nh·p, nw·p]`.
pub fn fold_patches<B: Backend>(t: Tensor<B, 3>, b: usize, (nh, nw): (usize, usize), p: usize) -> Tensor<B, 4> {
    let [s, n, c] = t.dims();
    assert!(
        s == b * p * p && n == nh * nw,
        "fold_patches: {:?} is not {b} images of {nh}x{nw} patches of {p}x{p}",
        [s, n, c]
    );
    let g = Patches { b, c, nh, nw, p };
    let generic = |t: Tensor<B, 3>| t.reshape([b, p, p, nh, nw, c]).permute([0, 5, 3, 1, 4, 2]).reshape(g.map());
    permutation(t, g, (fold, unfold), generic)
}

/// A permutation kernel and its inverse (also its gradient).
type Kernel = fn(&FlexTensor, &Patches) -> FlexTensor;

/// Runs `forward` on burn-flex f32, as an autodiff op (backward: `inverse`) on
/// `Autodiff<Flex>` f32, `generic` elsewhere.
fn permutation<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    g: Patches,
    (forward, inverse): (Kernel, Kernel),
    generic: impl FnOnce(Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    #[derive(Debug)]
    struct PermuteBackward(Kernel);

    impl Backward<Flex, 1> for PermuteBackward {
        type State = Patches;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| (self.0)(&dy, &g));
        }
    }

    let px = match cast::<B::FloatTensorPrimitive, FlexTensor>(float(x)) {
        Ok(t) if is_f32(&t) => return wrap::<B, E, _>(forward(&t, &g)),
        r => back(r),
    };
    let px = match cast::<B::FloatTensorPrimitive, AdFlex>(px) {
        Ok(t) if is_f32(&t.primitive) => {
            let y = forward(&t.primitive, &g);
            let out = match PermuteBackward(inverse)
                .prepare::<NoCheckpointing>([t.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(g, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            return wrap::<B, E, _>(out);
        }
        r => back(r),
    };
    generic(Tensor::from_primitive(TensorPrimitive::Float(px)))
}

/// `[B, C, H, W]` → `[B·p², N, C]`: one task per sequence `(b, ph, pw)`, channel by channel.
fn unfold(x: &FlexTensor, g: &Patches) -> FlexTensor {
    let xc = contiguous(x);
    let xs = xc.as_slice::<f32>().expect("f32");
    let (c, n, plane, pp) = (g.c, g.tokens(), g.nh * g.nw * g.p * g.p, g.p * g.p);
    let mut y = Output::new(g.b * pp * n * c);
    y.chunks(n * c).enumerate().for_each(|(s, seq)| {
        let (b, ph, pw) = (s / pp, s % pp / g.p, s % g.p);
        for ch in 0..c {
            let src = &xs[(b * c + ch) * plane..][..plane];
            for i in 0..g.nh {
                let row = &src[g.pixel(i * g.nw, ph, pw)..];
                for j in 0..g.nw {
                    seq[(i * g.nw + j) * c + ch] = MaybeUninit::new(row[j * g.p]);
                }
            }
        }
    });
    // SAFETY: each sequence's tokens x channels were all written above.
    let y = unsafe { y.assume_init() };
    FlexTensor::from_data(TensorData::new(y, g.seqs()))
}

/// `[B·p², N, C]` → `[B, C, H, W]`: one task per channel plane `(b, c)`.
fn fold(t: &FlexTensor, g: &Patches) -> FlexTensor {
    let tc = contiguous(t);
    let ts = tc.as_slice::<f32>().expect("f32");
    let (c, n, plane, pp) = (g.c, g.tokens(), g.nh * g.nw * g.p * g.p, g.p * g.p);
    let mut y = Output::new(g.b * c * plane);
    let out = y.shared();
    (0..g.b * c).into_par_iter().for_each(|bc| {
        let (b, ch) = (bc / c, bc % c);
        // SAFETY: plane (b, ch) of y is written by this task only.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(bc * plane).cast::<MaybeUninit<f32>>(), plane) };
        for q in 0..pp {
            let seq = &ts[(b * pp + q) * n * c..][..n * c];
            let (ph, pw) = (q / g.p, q % g.p);
            for i in 0..g.nh {
                let row = &mut dst[g.pixel(i * g.nw, ph, pw)..];
                for j in 0..g.nw {
                    row[j * g.p] = MaybeUninit::new(seq[(i * g.nw + j) * c + ch]);
                }
            }
        }
    });
    // SAFETY: the p² positions of every patch cover each plane.
    let y = unsafe { y.assume_init() };
    FlexTensor::from_data(TensorData::new(y, g.map()))
}
