//! Parameter counts and key names against timm 1.0.31.

use burn_flex::{Flex, FlexDevice};
use exvit_zoo::{count_params, create_model, named_tensors, TensorKind};

type B = Flex;

fn count(name: &str) -> usize {
    count_params(&create_model::<B>(name, 1000, &FlexDevice).unwrap())
}

#[test]
fn parameter_counts_match_timm() {
    // timm 1.0.31: sum(p.numel() for p in model.parameters()).
    assert_eq!(count("mobilevit_xxs"), 1_272_024);
    assert_eq!(count("mobilevit_xs"), 2_317_848);
    assert_eq!(count("mobilevit_s"), 5_578_632);
}

#[test]
fn exmobilevit_parameter_counts() {
    assert_eq!(count("exmobilevit_576"), 5_500_168);
    assert_eq!(count("exmobilevit_640"), 5_572_488);
    assert_eq!(count("exmobilevit_928"), 5_899_976);
}

#[test]
fn keys_are_timm_state_dict_keys() {
    let m = create_model::<B>("mobilevit_xxs", 1000, &FlexDevice).unwrap();
    let named = named_tensors(&m);
    let keys: Vec<&str> = named.iter().map(|t| t.key.as_str()).collect();
    // timm's state_dict has 311 entries for mobilevit_xxs.
    assert_eq!(keys.len(), 311);
    assert_eq!(keys[0], "stem.conv.weight");
    assert_eq!(*keys.last().unwrap(), "head.fc.bias");
    for k in [
        "stem.bn.num_batches_tracked",
        "stages.0.0.conv1_1x1.conv.weight",
        "stages.1.2.conv3_1x1.bn.running_var",
        "stages.2.1.conv_1x1.weight",
        "stages.2.1.transformer.0.attn.qkv.weight",
        "stages.2.1.transformer.1.mlp.fc2.bias",
        "stages.4.1.conv_fusion.bn.weight",
        "final_conv.conv.weight",
        "head.fc.weight",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    let qkv = named.iter().find(|t| t.key == "stages.2.1.transformer.0.attn.qkv.weight").unwrap();
    assert_eq!(qkv.data.shape.as_slice(), &[192, 64], "Linear weights are [out, in]");
    let buffers = named.iter().filter(|t| t.kind() == TensorKind::Buffer).count();
    assert_eq!(buffers % 3, 0);
}
