//! Single layers against PyTorch/timm (fixture: tools/parity/make_fixtures.py → layers.safetensors).

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexDevice};
use exvit_layers::{AttentionConfig, BatchNorm2dConfig, LayerNormConfig, LinearConfig};
use exvit_tests::{repo_root, Fixture};
use exvit_zoo::refinit::{reference_init, uniform_stream};

type B = Flex;
type AD = Autodiff<Flex>;

fn fixture() -> Fixture {
    Fixture::read(&repo_root().join("tests/fixtures/parity/layers.safetensors"))
}

fn seed(fx: &Fixture) -> u64 {
    fx.meta("seed").parse().unwrap()
}

/// The fixture script's inputs: `4u - 2` from the stream `(seed, key)`.
fn input<Bk: Backend<Device = FlexDevice>, const D: usize>(seed: u64, key: &str, shape: [usize; D]) -> Tensor<Bk, D> {
    let n = shape.iter().product();
    let v: Vec<f32> = uniform_stream(seed, key, n).into_iter().map(|u| u as f32 * 4.0 - 2.0).collect();
    Tensor::from_data(TensorData::new(v, shape), &FlexDevice)
}

fn assert_close(name: &str, got: TensorData, want: &exvit_tests::FixtureTensor, tol: f64) {
    assert_eq!(got.shape.as_slice(), &want.shape[..], "{name}: shape");
    let got: Vec<f32> = got.to_vec().unwrap();
    let worst = got.iter().zip(&want.values).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst <= tol, "{name}: max |diff| {worst:.3e} > {tol:.0e}");
}

#[test]
fn batchnorm_train_step_matches_pytorch() {
    let fx = fixture();
    let s = seed(&fx);
    let bn = reference_init(BatchNorm2dConfig::new(6).init::<AD>(&FlexDevice), s);
    let x = input::<AD, 4>(s, "bn.x", [4, 6, 5, 7]);
    let y = bn.forward(x.clone());
    assert_close("bn.train.y", y.into_data(), fx.get("bn.train.y"), 1e-5);
    // Running statistics use the unbiased batch variance and momentum 0.1.
    assert_close("bn.running_mean", bn.running_mean.value_sync().into_data(), fx.get("bn.running_mean"), 1e-6);
    assert_close("bn.running_var", bn.running_var.value_sync().into_data(), fx.get("bn.running_var"), 1e-6);
    assert_close(
        "bn.num_batches_tracked",
        bn.num_batches_tracked.value_sync().into_data(),
        fx.get("bn.num_batches_tracked"),
        0.0,
    );
    // Eval mode (`valid()`: the inner backend without autodiff) uses the updated running stats.
    let bn_eval = bn.valid();
    let y = bn_eval.forward(x.inner());
    assert_close("bn.eval.y", y.into_data(), fx.get("bn.eval.y"), 1e-5);
}

#[test]
fn layernorm_linear_and_attention_match_pytorch() {
    let fx = fixture();
    let s = seed(&fx);
    let ln = reference_init(LayerNormConfig::new(16).init::<B>(&FlexDevice), s);
    assert_close("ln.y", ln.forward(input::<B, 3>(s, "ln.x", [3, 5, 16])).into_data(), fx.get("ln.y"), 1e-5);

    let lin = reference_init(LinearConfig::new(16, 24).init::<B>(&FlexDevice), s);
    assert_close(
        "linear.y",
        lin.forward(input::<B, 3>(s, "linear.x", [3, 5, 16])).into_data(),
        fx.get("linear.y"),
        1e-5,
    );

    let attn = reference_init(AttentionConfig::new(16, 4).init::<B>(&FlexDevice), s);
    assert_close("attn.y", attn.forward(input::<B, 3>(s, "attn.x", [2, 9, 16])).into_data(), fx.get("attn.y"), 1e-5);
}

#[test]
fn eval_batchnorm_is_folded_into_the_conv() {
    // ConvNormAct at inference (BN folded into the conv) equals conv → BN → SiLU computed apart.
    use exvit_layers::{Act, ConvNormActConfig};
    let cfg = ConvNormActConfig::new(8, 12, 3).with_stride(2).with_act(Act::Silu);
    let cna = reference_init(cfg.init::<B>(&FlexDevice), 3);
    let x = input::<B, 4>(3, "x", [2, 8, 9, 9]);
    let folded = cna.forward(x.clone());
    let apart = burn::tensor::activation::silu(cna.bn.forward(cna.conv.forward(x)));
    let d: f32 = folded.sub(apart).abs().max().into_scalar();
    assert!(d < 1e-5, "folded and unfolded ConvNormAct differ by {d}");
}
