//! Registry names → configs, as timm's `model_cfgs` table.

use burn::prelude::*;
use thiserror::Error;

use crate::mobilevit::{MobileVit, MobileVitConfig, StageConfig, TapConfig, TransformerConfig};

/// Errors from the zoo.
#[derive(Debug, Error)]
pub enum ZooError {
    /// No model of that name.
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registry's names, comma-separated.
        known: String,
    },
}

fn ir(depth: usize, channels: usize, stride: usize, bottle_ratio: f64) -> StageConfig {
    StageConfig { depth, channels, stride, bottle_ratio, transformer: None }
}

fn mvit(channels: usize, dim: usize, depth: usize, bottle_ratio: f64) -> StageConfig {
    StageConfig {
        depth: 1,
        channels,
        stride: 2,
        bottle_ratio,
        transformer: Some(TransformerConfig { dim, depth, patch_size: 2 }),
    }
}

fn base(name: &str, stages: Vec<StageConfig>, num_features: usize) -> MobileVitConfig {
    MobileVitConfig {
        name: name.to_string(),
        stem_channels: 16,
        stages,
        num_features,
        exshortcuts: Vec::new(),
        num_classes: 1000,
        drop_rate: 0.0,
        drop_path_rate: 0.0,
        num_heads: 4,
    }
}

fn mobilevit_xxs() -> MobileVitConfig {
    base(
        "mobilevit_xxs",
        vec![ir(1, 16, 1, 2.0), ir(3, 24, 2, 2.0), mvit(48, 64, 2, 2.0), mvit(64, 80, 4, 2.0), mvit(80, 96, 3, 2.0)],
        320,
    )
}

fn mobilevit_xs() -> MobileVitConfig {
    base(
        "mobilevit_xs",
        vec![ir(1, 32, 1, 4.0), ir(3, 48, 2, 4.0), mvit(64, 96, 2, 4.0), mvit(80, 120, 4, 4.0), mvit(96, 144, 3, 4.0)],
        384,
    )
}

fn mobilevit_s() -> MobileVitConfig {
    base(
        "mobilevit_s",
        vec![
            ir(1, 32, 1, 4.0),
            ir(3, 64, 2, 4.0),
            mvit(96, 144, 2, 4.0),
            mvit(128, 192, 4, 4.0),
            mvit(160, 240, 3, 4.0),
        ],
        640,
    )
}

/// ExMobileViT on the S backbone: taps on `stages.2` and `stages.3`, `final_conv` 160 → E.
fn exmobilevit_s(name: &str, tap0: usize, tap1: usize, num_features: usize) -> MobileVitConfig {
    let mut cfg = mobilevit_s();
    cfg.name = name.to_string();
    cfg.num_features = num_features;
    cfg.exshortcuts = vec![TapConfig { stage: 2, channels: tap0 }, TapConfig { stage: 3, channels: tap1 }];
    cfg
}

type Entry = (&'static str, fn() -> MobileVitConfig);

const REGISTRY: &[Entry] = &[
    ("mobilevit_xxs", mobilevit_xxs),
    ("mobilevit_xs", mobilevit_xs),
    ("mobilevit_s", mobilevit_s),
    ("exmobilevit_576", || exmobilevit_s("exmobilevit_576", 32, 64, 480)),
    ("exmobilevit_640", || exmobilevit_s("exmobilevit_640", 32, 128, 480)),
    ("exmobilevit_928", || exmobilevit_s("exmobilevit_928", 128, 160, 640)),
];

/// The registered model names, in registry order.
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// The config registered under `name`, with `num_classes` classes.
pub fn model_config(name: &str, num_classes: usize) -> Result<MobileVitConfig, ZooError> {
    let (_, make) = REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ZooError::UnknownModel { name: name.to_string(), known: model_names().join(", ") })?;
    let mut cfg = make();
    cfg.num_classes = num_classes;
    Ok(cfg)
}

/// Builds the registered model `name` with fresh weights.
pub fn create_model<B: Backend>(name: &str, num_classes: usize, device: &B::Device) -> Result<MobileVit<B>, ZooError> {
    Ok(model_config(name, num_classes)?.init(device))
}
