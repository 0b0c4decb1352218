//! What a model's weights expect of their input: timm's `pretrained_cfg`. The model zoo stores
//! one per model; the data pipeline turns it into a transform (exvit-data's
//! `DataConfig::from_pretrained`). It lives here, below both, so that neither has to know the
//! other: the zoo knows no transform, the data pipeline no model.

use serde::{Deserialize, Serialize};

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (timm, torchvision).
    #[default]
    Rgb,
    /// Blue, green, red (ml-cvnets reads images with OpenCV).
    Bgr,
}

/// The preprocessing a model's weights expect, as timm's `pretrained_cfg`: `eval` and `probe`
/// use it by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainedCfg {
    /// `[C, H, W]` of the evaluation input.
    pub input_size: [usize; 3],
    /// Eval resize: the shorter side goes to `H / crop_pct`, then a center crop of `H`.
    pub crop_pct: f64,
    /// Resize interpolation (`bicubic`, `bilinear`).
    pub interpolation: String,
    /// Per-channel mean subtracted from inputs in [0, 1].
    pub mean: [f64; 3],
    /// Per-channel std the inputs are divided by.
    pub std: [f64; 3],
    /// Channel order.
    pub channel_order: ChannelOrder,
    /// The classifier's module (timm `_cfg`'s `classifier`): `{classifier}.weight` is
    /// `[num_classes, features]`, which is how a weights file tells its class count.
    pub classifier: String,
    /// timm's weights tag on the Hugging Face hub, where there is one.
    pub hf_hub_id: Option<String>,
    /// ImageNet-1k top-1 (%) reported for those weights, where known.
    pub imagenet_top1: Option<f64>,
}

impl Default for PretrainedCfg {
    /// MobileViT's: 256x256, crop_pct 0.9, bicubic, no mean/std (inputs in [0, 1]), RGB.
    fn default() -> Self {
        Self {
            input_size: [3, 256, 256],
            crop_pct: 0.9,
            interpolation: "bicubic".to_string(),
            mean: [0.0; 3],
            std: [1.0; 3],
            channel_order: ChannelOrder::Rgb,
            classifier: "head.fc".to_string(),
            hf_hub_id: None,
            imagenet_top1: None,
        }
    }
}
