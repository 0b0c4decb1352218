//! Attention parity with timm 1.0.31, on fixtures from tools/parity/make_attention_fixtures.py:
//! every MobileViT block's per-layer taps (`stages.S.B.transformer.K`, `stages.S.B.norm`)
//! equal timm's `stages[S][B].transformer[K]` / `.norm` outputs folded back to maps (1e-4, as
//! the other parity checks), and every layer's attention probabilities equal the input of
//! timm's attention dropout (the softmax, with `fused_attn` off) within 1e-5. The cases: the
//! tiny TOML network at 64, mobilevit_xxs at 256 and at 200 (odd maps that timm resizes
//! before the unfold: 25 -> 26, 13 -> 14, 7 -> 8), ExMobileViT-xxs at 160.

use burn_flex::FlexDevice;
use exvit_tests::parity::check_attention;

type B = burn_flex::Flex;

#[test]
fn per_block_taps_and_attention_match_timm() {
    for f in [
        "attention_tiny_64",
        "attention_mobilevit_xxs_256",
        "attention_mobilevit_xxs_200",
        "attention_exmobilevit_xxs_160",
    ] {
        check_attention::<B>(&format!("{f}.safetensors"), &FlexDevice, 1e-4, 1e-5);
    }
}
