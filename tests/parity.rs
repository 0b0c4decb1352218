//! Eval-mode parity with timm 1.0.31, on fixtures from tools/parity/make_fixtures.py.
//!
//! Both sides initialise the same model with the reference initialisation (SplitMix64 streams
//! keyed by the state_dict key), run a batch of 2 reference inputs, and compare every stage:
//! `stem`, `stages.0..4`, `final_conv`, `exshortcuts.N`, `pooled` and `logits`, within 1e-4.
//! ExMobileViT is compared with a PyTorch implementation on timm's body (the fixture script's
//! `ExMobileViT`), and a TOML variant with the same network built by timm's ByobNet.

use burn_flex::FlexDevice;
use exvit_tests::parity::check_eval;

type B = burn_flex::Flex;
const TOL: f64 = 1e-4;

fn check_fixture(file: &str) {
    check_eval::<B>(file, &FlexDevice, TOL);
}

fn check_sizes(model: &str) {
    for size in [160, 192, 256, 288, 320, 200] {
        check_fixture(&format!("{model}_{size}.safetensors"));
    }
}

#[test]
fn mobilevit_xxs_matches_timm_at_every_size() {
    // 160, 192, 256, 288, 320 (cvnets' multi-scale sizes) and 200: at 200 stages.2 runs at
    // 25x25, so the MobileViT block resizes to 26x26 and back.
    check_sizes("mobilevit_xxs");
}

#[test]
fn mobilevit_xs_matches_timm_at_every_size() {
    check_sizes("mobilevit_xs");
}

#[test]
fn mobilevit_s_matches_timm_at_every_size() {
    check_sizes("mobilevit_s");
}

#[test]
fn exmobilevit_matches_the_pytorch_reference() {
    for f in [
        "exmobilevit_576_256",
        "exmobilevit_640_256",
        "exmobilevit_928_200",
        "exmobilevit_xxs_256",
        "exmobilevit_xs_256",
    ] {
        check_fixture(&format!("{f}.safetensors"));
    }
}

#[test]
fn toml_variant_matches_timm_byobnet() {
    check_fixture("tiny_64.safetensors");
}
