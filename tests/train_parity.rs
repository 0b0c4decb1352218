//! Training-mode parity with PyTorch: one step in train mode (BN on batch statistics, no
//! dropout or drop-path), cross entropy with label smoothing 0.1. The loss, the logits, every
//! parameter's gradient (within 1e-3 relative L2) and every BN's running statistics after the
//! step (within 1e-5) must agree with timm (fixtures: tools/parity/make_fixtures.py, `make_train`).
//!
//! The fixture stores each gradient's L2 norm and its projections on 16 seeded random vectors
//! (plus its first values), so the relative L2 error is estimated from
//! `‖P(g − g_ref)‖ / ‖P g_ref‖`, a Johnson–Lindenstrauss sketch of `‖g − g_ref‖ / ‖g_ref‖`.

use burn::backend::Autodiff;
use burn_flex::{Flex, FlexDevice};

fn check(file: &str) {
    exvit_tests::parity::check_train::<Autodiff<Flex>>(file, &FlexDevice);
}

#[test]
fn mobilevit_xxs_train_step_matches_pytorch() {
    check("train_mobilevit_xxs_128.safetensors");
}

#[test]
fn exmobilevit_640_train_step_matches_pytorch() {
    // At 96x96, stages.4 runs at 3x3: the odd-size resize is differentiated too.
    check("train_exmobilevit_640_96.safetensors");
}
