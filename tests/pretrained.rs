//! Real timm weights (ignored by default: no weights are downloaded in tests).
//!
//! With `EXVIT_TIMM_WEIGHTS` pointing to a timm MobileViT checkpoint (e.g.
//! `mobilevit_s.cvnets_in1k`'s `model.safetensors`) and `EXVIT_TIMM_REFERENCE` to the file that
//! `tools/parity/pretrained_reference.py` makes from the same weights and a known image:
//!
//! ```sh
//! EXVIT_TIMM_WEIGHTS=model.safetensors EXVIT_TIMM_REFERENCE=ref.safetensors \
//!     cargo test -p exvit-tests --test pretrained -- --ignored
//! ```
//! `EXVIT_TIMM_MODEL` names the model (default `mobilevit_s`).

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexDevice};
use exvit_tests::Fixture;
use exvit_zoo::{create_model, load_safetensors, LoadMode};

type B = Flex;

#[test]
#[ignore = "needs EXVIT_TIMM_WEIGHTS and EXVIT_TIMM_REFERENCE (see the file's docs)"]
fn pretrained_timm_weights_predict_like_timm() {
    let weights = PathBuf::from(std::env::var("EXVIT_TIMM_WEIGHTS").expect("set EXVIT_TIMM_WEIGHTS"));
    let reference = PathBuf::from(std::env::var("EXVIT_TIMM_REFERENCE").expect("set EXVIT_TIMM_REFERENCE"));
    let name = std::env::var("EXVIT_TIMM_MODEL").unwrap_or_else(|_| "mobilevit_s".into());
    let model = create_model::<B>(&name, 1000, &FlexDevice).unwrap();
    let (model, _) = load_safetensors(model, &weights, LoadMode::Strict).unwrap();
    let fx = Fixture::read(&reference);
    let input = fx.get("input");
    let x: Vec<f32> = input.values.iter().map(|&v| v as f32).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, input.shape.clone()), &FlexDevice);
    let logits: Vec<f32> = model.forward(x).into_data().to_vec().unwrap();
    let want = &fx.get("logits").values;
    let worst = logits.iter().zip(want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-3, "logits differ from timm's by {worst:e}");
    let argmax = |v: &[f64]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let ours: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    assert_eq!(argmax(&ours), argmax(want), "top-1 class differs from timm's");
}
