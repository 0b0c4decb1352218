//! Registry names → configs, as timm's `model_cfgs` table, and TOML variants.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Serialize;
use thiserror::Error;

use crate::mobilevit::{ExShortcutSpec, MobileVit, MobileVitConfig, PretrainedCfg, StageConfig, TransformerConfig};
use crate::state::{named_tensors, TensorKind};

/// Errors from the zoo.
#[derive(Debug, Error)]
pub enum ZooError {
    /// No model of that name.
    #[error("unknown model `{name}`; known models: {known} (or the path of a .toml variant)")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registry's names, comma-separated.
        known: String,
    },
    /// A TOML variant cannot be read or is invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the field).
        message: String,
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

fn base(name: &str, stages: Vec<StageConfig>, num_features: usize, hub: &str, top1: f64) -> MobileVitConfig {
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
        pretrained: PretrainedCfg {
            hf_hub_id: Some(hub.to_string()),
            imagenet_top1: Some(top1),
            ..PretrainedCfg::default()
        },
    }
}

fn mobilevit_xxs() -> MobileVitConfig {
    let stages =
        vec![ir(1, 16, 1, 2.0), ir(3, 24, 2, 2.0), mvit(48, 64, 2, 2.0), mvit(64, 80, 4, 2.0), mvit(80, 96, 3, 2.0)];
    base("mobilevit_xxs", stages, 320, "timm/mobilevit_xxs.cvnets_in1k", 69.0)
}

fn mobilevit_xs() -> MobileVitConfig {
    let stages =
        vec![ir(1, 32, 1, 4.0), ir(3, 48, 2, 4.0), mvit(64, 96, 2, 4.0), mvit(80, 120, 4, 4.0), mvit(96, 144, 3, 4.0)];
    base("mobilevit_xs", stages, 384, "timm/mobilevit_xs.cvnets_in1k", 74.8)
}

fn mobilevit_s() -> MobileVitConfig {
    let stages = vec![
        ir(1, 32, 1, 4.0),
        ir(3, 64, 2, 4.0),
        mvit(96, 144, 2, 4.0),
        mvit(128, 192, 4, 4.0),
        mvit(160, 240, 3, 4.0),
    ];
    base("mobilevit_s", stages, 640, "timm/mobilevit_s.cvnets_in1k", 78.4)
}

/// `backbone` renamed, with `final_conv` → `num_features` and no pretrained weights of its own
/// (its trunk can come from the backbone's with `--init-from`).
fn variant(backbone: fn() -> MobileVitConfig, name: &str, num_features: usize) -> MobileVitConfig {
    let mut cfg = backbone();
    cfg.name = name.to_string();
    cfg.num_features = num_features;
    cfg.pretrained.hf_hub_id = None;
    cfg.pretrained.imagenet_top1 = None;
    cfg
}

/// An ExMobileViT: ExShortcuts on `stages.2` and `stages.3`, then `final_conv` → `num_features`.
fn ex(backbone: fn() -> MobileVitConfig, name: &str, tap0: usize, tap1: usize, num_features: usize) -> MobileVitConfig {
    let mut cfg = variant(backbone, name, num_features);
    cfg.exshortcuts = vec![ExShortcutSpec { stage: 2, channels: tap0 }, ExShortcutSpec { stage: 3, channels: tap1 }];
    cfg
}

/// A control for an ExMobileViT: the backbone with the same classifier width and no taps.
fn control(backbone: fn() -> MobileVitConfig, name: &str, width: usize) -> MobileVitConfig {
    variant(backbone, name, width)
}

/// One registry entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Registry name.
    pub name: &'static str,
    /// One line about the model.
    pub about: &'static str,
    /// For a control, the ExMobileViT it controls for.
    pub control_for: Option<&'static str>,
    make: fn() -> MobileVitConfig,
}

impl Entry {
    /// The model's config (1000 classes).
    pub fn config(&self) -> MobileVitConfig {
        (self.make)()
    }
}

const fn entry(name: &'static str, about: &'static str, make: fn() -> MobileVitConfig) -> Entry {
    Entry { name, about, control_for: None, make }
}

/// The registry, in listing order.
pub const REGISTRY: &[Entry] = &[
    entry("mobilevit_xxs", "MobileViT-XXS (timm)", mobilevit_xxs),
    entry("mobilevit_xs", "MobileViT-XS (timm)", mobilevit_xs),
    entry("mobilevit_s", "MobileViT-S (timm); also the control for exmobilevit_640 (width 640, no taps)", mobilevit_s),
    entry("exmobilevit_576", "ExMobileViT-576: S + taps 32 (stages.2) + 64 (stages.3) + 480", || {
        ex(mobilevit_s, "exmobilevit_576", 32, 64, 480)
    }),
    entry("exmobilevit_640", "ExMobileViT-640: S + taps 32 + 128 + 480", || {
        ex(mobilevit_s, "exmobilevit_640", 32, 128, 480)
    }),
    entry("exmobilevit_928", "ExMobileViT-928: S + taps 128 + 160 + 640", || {
        ex(mobilevit_s, "exmobilevit_928", 128, 160, 640)
    }),
    entry("exmobilevit_xxs", "ExMobileViT on XXS, tap ratio 1: 48 + 64 + 320 (docs/models.md)", || {
        ex(mobilevit_xxs, "exmobilevit_xxs", 48, 64, 320)
    }),
    entry("exmobilevit_xs", "ExMobileViT on XS, tap ratio 1: 64 + 80 + 384 (docs/models.md)", || {
        ex(mobilevit_xs, "exmobilevit_xs", 64, 80, 384)
    }),
    Entry {
        name: "mobilevit_s_head576",
        about: "control: S with final_conv 160 -> 576, no taps",
        control_for: Some("exmobilevit_576"),
        make: || control(mobilevit_s, "mobilevit_s_head576", 576),
    },
    Entry {
        name: "mobilevit_s_head928",
        about: "control: S with final_conv 160 -> 928, no taps",
        control_for: Some("exmobilevit_928"),
        make: || control(mobilevit_s, "mobilevit_s_head928", 928),
    },
    Entry {
        name: "mobilevit_xxs_head432",
        about: "control: XXS with final_conv 80 -> 432, no taps",
        control_for: Some("exmobilevit_xxs"),
        make: || control(mobilevit_xxs, "mobilevit_xxs_head432", 432),
    },
    Entry {
        name: "mobilevit_xs_head528",
        about: "control: XS with final_conv 96 -> 528, no taps",
        control_for: Some("exmobilevit_xs"),
        make: || control(mobilevit_xs, "mobilevit_xs_head528", 528),
    },
];

/// The registered model names, in registry order.
pub fn model_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The config registered under `name`, with `num_classes` classes.
pub fn model_config(name: &str, num_classes: usize) -> Result<MobileVitConfig, ZooError> {
    let e = REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ZooError::UnknownModel { name: name.to_string(), known: model_names().join(", ") })?;
    let mut cfg = e.config();
    cfg.num_classes = num_classes;
    Ok(cfg)
}

/// A registry name, or the path of a TOML file holding a [`MobileVitConfig`] (a user variant).
/// `num_classes` overrides the file's.
pub fn resolve_model(name_or_path: &str, num_classes: usize) -> Result<MobileVitConfig, ZooError> {
    let path = Path::new(name_or_path);
    if !name_or_path.ends_with(".toml") {
        return model_config(name_or_path, num_classes);
    }
    let err = |message: String| ZooError::Config { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read model variant: {e}")))?;
    let mut cfg: MobileVitConfig = toml::from_str(&text).map_err(|e| err(format!("invalid model variant: {e}")))?;
    cfg.num_classes = num_classes;
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

/// Builds the registered model `name` (or a TOML variant) with fresh weights.
pub fn create_model<B: Backend>(name: &str, num_classes: usize, device: &B::Device) -> Result<MobileVit<B>, ZooError> {
    Ok(resolve_model(name, num_classes)?.init(device))
}

/// One row of `exvit zoo list`.
#[derive(Debug, Clone, Serialize)]
pub struct ZooRow {
    /// Registry name.
    pub name: String,
    /// One line about it.
    pub about: String,
    /// Learned parameters (timm's count).
    pub params: usize,
    /// Parameters per top-level module (`stem`, `stages.N`, `final_conv`, `exshortcuts`,
    /// `head`), in model order.
    pub modules: Vec<(String, usize)>,
    /// Multiply-accumulates per image ([`count_macs`](crate::macs::count_macs)) at the size
    /// [`zoo_table`] was asked for, by default the pretrained config's input size.
    pub macs: u64,
    /// Width of the classifier input.
    pub classifier_width: usize,
    /// The ExMobileViT this model controls for.
    pub control_for: Option<String>,
    /// The preprocessing its weights expect.
    pub pretrained: PretrainedCfg,
}

/// Parameters per top-level module of a model, in model order.
pub fn module_params<B: Backend>(model: &MobileVit<B>) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for t in named_tensors(model).into_iter().filter(|t| t.kind() == TensorKind::Param) {
        let mut parts = t.key.split('.');
        let top = parts.next().unwrap_or_default();
        let group =
            if top == "stages" { format!("stages.{}", parts.next().unwrap_or_default()) } else { top.to_string() };
        match out.last_mut() {
            Some((g, n)) if *g == group => *n += t.data.num_elements(),
            _ => out.push((group, t.data.num_elements())),
        }
    }
    out
}

/// The zoo table (builds each model once on `device` to count), the MACs at `size`x`size`, or
/// at each model's pretrained input size when `None`.
pub fn zoo_table<B: Backend>(num_classes: usize, size: Option<usize>, device: &B::Device) -> Vec<ZooRow> {
    REGISTRY
        .iter()
        .map(|e| {
            let mut cfg = e.config();
            cfg.num_classes = num_classes;
            let model: MobileVit<B> = cfg.init(device);
            let modules = module_params(&model);
            let [_, h, w] = cfg.pretrained.input_size;
            let input = size.map_or([h, w], |s| [s, s]);
            ZooRow {
                name: e.name.to_string(),
                about: e.about.to_string(),
                params: modules.iter().map(|(_, n)| n).sum(),
                macs: crate::macs::count_macs(&model, input).total,
                modules,
                classifier_width: cfg.classifier_width(),
                control_for: e.control_for.map(str::to_string),
                pretrained: cfg.pretrained,
            }
        })
        .collect()
}
