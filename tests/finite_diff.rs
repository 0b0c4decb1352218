//! Finite-difference checks of exvit's own layers, in f64 (flex tensors carry their dtype; every
//! tensor and parameter here is F64) on `Autodiff<Flex>`:
//! BatchNorm2d (train mode), LayerNorm, attention, and the MobileViT block at an odd size (so
//! the bilinear resize, the unfold and the fold are all differentiated).
//!
//! For a loss `L = Σ f(x) ⊙ W` (W fixed and random), the directional derivative `⟨∇L, v⟩` from
//! backprop must equal the central difference `(L(x + hv) − L(x − hv)) / 2h` for random `v`,
//! with respect to the input and to chosen parameters.

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::Distribution;
use burn_flex::{Flex, FlexDevice};
use exvit_layers::{AttentionConfig, BatchNorm2dConfig, LayerNormConfig, MobileVitBlockConfig};

type B = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;
const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn rand<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), (&DEV, DType::F64))
}

/// The module with every float tensor in f64.
fn f64<M: Module<B>>(m: M) -> M {
    m.map(&mut Scale(1.0))
}

fn dot<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    scalar(a.mul(b).sum())
}

/// The value of a one-element f64 tensor (fails if anything computed in f32).
fn scalar(t: Tensor<B, 1>) -> f64 {
    t.into_data().to_vec::<f64>().expect("an f64 result")[0]
}

/// Checks `⟨∇ₜ L, v⟩` against the central difference of `loss(t)` along a random `v`.
fn check<const D: usize>(what: &str, t: Tensor<B, D>, loss: impl Fn(Tensor<B, D>) -> Tensor<B, 1>) {
    let t = t.detach().require_grad();
    let l = loss(t.clone());
    let grads = l.backward();
    let g = Tensor::<B, D>::from_inner(t.grad(&grads).expect("gradient"));
    let v = rand(t.dims());
    let analytic = dot(g, v.clone());
    let plus = scalar(loss(t.clone().detach().add(v.clone().mul_scalar(H)).detach()));
    let minus = scalar(loss(t.detach().sub(v.mul_scalar(H)).detach()));
    let numeric = (plus - minus) / (2.0 * H);
    let err = (analytic - numeric).abs() / numeric.abs().max(1e-3);
    assert!(err < TOL, "{what}: backprop {analytic:.10e} vs finite difference {numeric:.10e} (rel {err:.1e})");
}

#[test]
fn batchnorm_train_mode_gradients() {
    let bn = f64(BatchNorm2dConfig::new(5).init::<B>(&DEV));
    let w = rand([3, 5, 4, 6]);
    let x = rand([3, 5, 4, 6]).mul_scalar(2.0).add_scalar(0.5);
    check("BatchNorm2d d/dx", x.clone(), |x| bn.forward(x).mul(w.clone()).sum());
    let gamma = rand([5]).add_scalar(1.5);
    check("BatchNorm2d d/dweight", gamma, |g| {
        let mut bn = bn.clone();
        bn.weight = Param::from_tensor(g);
        bn.forward(x.clone()).mul(w.clone()).sum()
    });
}

#[test]
fn layernorm_and_attention_gradients() {
    let ln = f64(LayerNormConfig::new(8).init::<B>(&DEV));
    let w = rand([2, 7, 8]);
    check("LayerNorm d/dx", rand([2, 7, 8]), |x| ln.forward(x).mul(w.clone()).sum());

    let attn = AttentionConfig::new(8, 2).init::<B>(&DEV);
    let attn = attn.map(&mut Scale(3.0));
    check("Attention d/dx", rand([2, 7, 8]), |x| attn.forward(x).mul(w.clone()).sum());
    let qkv = attn.qkv.weight.val();
    check("Attention d/dqkv.weight", qkv, |q| {
        let mut a = attn.clone();
        a.qkv.weight = Param::from_tensor(q);
        a.forward(rand_fixed()).mul(w.clone()).sum()
    });
}

/// A fixed input (the same on every call).
fn rand_fixed() -> Tensor<B, 3> {
    let n = 2 * 7 * 8;
    let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0).collect();
    Tensor::from_data(TensorData::new(v, [2, 7, 8]), (&DEV, DType::F64))
}

/// Scales every float parameter (so attention logits are not almost uniform).
struct Scale(f64);
impl burn::module::ModuleMapper<B> for Scale {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let s = self.0;
        p.map(|t| t.cast(DType::F64).mul_scalar(s).detach().require_grad())
    }
}

#[test]
fn mobilevit_block_gradients_at_an_odd_size() {
    // 5x7 is not a multiple of the patch size: resize to 6x8, unfold, transformer, fold,
    // resize back, fusion.
    let mut cfg = MobileVitBlockConfig::new(4, 8, 1);
    cfg.num_heads = 2;
    let blk = f64(cfg.init::<B>(&DEV));
    let w = rand([2, 4, 5, 7]);
    check("MobileVitBlock d/dx", rand([2, 4, 5, 7]), |x| blk.forward(x).mul(w.clone()).sum());
    let x = rand([2, 4, 5, 7]);
    check("MobileVitBlock d/dconv_1x1.weight", blk.conv_1x1.weight.val(), |k| {
        let mut b = blk.clone();
        b.conv_1x1.weight = Param::from_tensor(k);
        b.forward(x.clone()).mul(w.clone()).sum()
    });
}
