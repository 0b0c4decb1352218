//! MobileViT (timm `mobilevit_xxs/xs/s`) and ExMobileViT: one config type, one builder.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use exvit_layers::head::global_avg_pool;
use exvit_layers::{
    BlockLayers, BottleneckBlock, BottleneckBlockConfig, ClassifierHead, ClassifierHeadConfig, ConvNormAct,
    ConvNormActConfig, ExShortcut, ExShortcutConfig, MobileVitBlock, MobileVitBlockConfig, ShapeError, TypedLayer,
};
use serde::{Deserialize, Serialize};

pub use exvit_common::pretrained::{ChannelOrder, PretrainedCfg};

/// The transformer part of a MobileViT stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Token width.
    pub dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Square patch size.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
}

fn default_patch() -> usize {
    2
}

/// One stage, as timm's `_inverted_residual_block` / `_mobilevit_block`: `depth` inverted
/// residuals (the first one with `stride`), then a MobileViT block when `transformer` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Number of inverted residuals.
    pub depth: usize,
    /// Output channels.
    pub channels: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Expansion of the inverted residuals.
    pub bottle_ratio: f64,
    /// The MobileViT block, if any.
    #[serde(default)]
    pub transformer: Option<TransformerConfig>,
}

/// An ExShortcut: a tap on the output of `stages.{stage}` with `channels` features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExShortcutSpec {
    /// Index of the tapped stage.
    pub stage: usize,
    /// Features the tap adds to the classifier input.
    pub channels: usize,
}

/// A MobileViT / ExMobileViT model, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileVitConfig {
    /// Registry name.
    pub name: String,
    /// Stem width (3x3 conv, stride 2).
    pub stem_channels: usize,
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
    /// Output channels of `final_conv` (timm's `num_features`).
    pub num_features: usize,
    /// ExShortcuts (empty for plain MobileViT).
    #[serde(default)]
    pub exshortcuts: Vec<ExShortcutSpec>,
    /// Classes of the classifier.
    #[serde(default = "default_classes")]
    pub num_classes: usize,
    /// Dropout before the classifier.
    #[serde(default)]
    pub drop_rate: f64,
    /// Stochastic depth inside the transformers.
    #[serde(default)]
    pub drop_path_rate: f64,
    /// Attention heads of every transformer.
    #[serde(default = "default_heads")]
    pub num_heads: usize,
    /// Preprocessing the weights expect (timm's `pretrained_cfg`).
    #[serde(default)]
    pub pretrained: PretrainedCfg,
}

/// A model config the builder cannot build: the model, the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{model}: {field}: {message}")]
pub struct InvalidConfig {
    /// The config's name.
    pub model: String,
    /// The field at fault (`stages[2].transformer`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn default_classes() -> usize {
    1000
}
fn default_heads() -> usize {
    4
}

impl MobileVitConfig {
    /// Width of the classifier input: the final features plus every tap's.
    pub fn classifier_width(&self) -> usize {
        self.num_features + self.exshortcuts.iter().map(|t| t.channels).sum::<usize>()
    }

    /// Checks the config for what the builder cannot build, naming the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field: String, message: String| Err(InvalidConfig { model: self.name.clone(), field, message });
        if self.stem_channels == 0 || self.num_features == 0 || self.num_classes == 0 {
            return bad("stem_channels, num_features, num_classes".into(), "must be positive".into());
        }
        if self.stages.is_empty() {
            return bad("stages".into(), "is empty".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.channels == 0 || s.stride == 0 || s.bottle_ratio <= 0.0 {
                return bad(format!("stages[{i}]"), "needs positive channels, stride and bottle_ratio".into());
            }
            if s.depth == 0 && i == 0 && self.stem_channels != s.channels {
                return bad("stages[0]".into(), "has depth 0 but changes the width".into());
            }
            if let Some(t) = &s.transformer {
                if t.dim == 0 || t.depth == 0 || t.patch_size == 0 || !t.dim.is_multiple_of(self.num_heads) {
                    return bad(
                        format!("stages[{i}].transformer"),
                        format!(
                            "dim {} must be a positive multiple of num_heads {}, with positive depth and patch_size",
                            t.dim, self.num_heads
                        ),
                    );
                }
            }
        }
        for (i, t) in self.exshortcuts.iter().enumerate() {
            if t.stage >= self.stages.len() {
                return bad(
                    format!("exshortcuts[{i}]"),
                    format!("taps stages.{} but there are {} stages", t.stage, self.stages.len()),
                );
            }
            if t.channels == 0 {
                return bad(format!("exshortcuts[{i}].channels"), "must be positive".into());
            }
        }
        Ok(())
    }

    /// Output channels of each stage.
    pub fn stage_channels(&self) -> Vec<usize> {
        self.stages.iter().map(|s| s.channels).collect()
    }

    /// Builds the model with fresh (timm byobnet-style) initialisation.
    ///
    /// # Panics
    /// When a tap names a stage that does not exist.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileVit<B> {
        let stem = ConvNormActConfig::new(3, self.stem_channels, 3).with_stride(2).init(device);
        let mut in_ch = self.stem_channels;
        let mut stages = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let mut blocks = Vec::new();
            for i in 0..s.depth {
                let stride = if i == 0 { s.stride } else { 1 };
                let cfg = BottleneckBlockConfig::new(in_ch, s.channels, s.bottle_ratio, stride);
                blocks.push(StageBlock::Bottleneck(cfg.init(device)));
                in_ch = s.channels;
            }
            if let Some(t) = &s.transformer {
                let mut cfg = MobileVitBlockConfig::new(s.channels, t.dim, t.depth);
                cfg.patch_size = t.patch_size;
                cfg.num_heads = self.num_heads;
                cfg.drop_path = self.drop_path_rate;
                blocks.push(StageBlock::MobileVit(cfg.init(device)));
            }
            stages.push(blocks);
        }
        let final_conv = ConvNormActConfig::new(in_ch, self.num_features, 1).init(device);
        let exshortcuts = self
            .exshortcuts
            .iter()
            .map(|t| {
                assert!(
                    t.stage < self.stages.len(),
                    "{}: tap on stages.{} but the model has {} stages",
                    self.name,
                    t.stage,
                    self.stages.len()
                );
                ExShortcutConfig::new(self.stages[t.stage].channels, t.channels).init(device)
            })
            .collect();
        let mut head = ClassifierHeadConfig::new(self.classifier_width(), self.num_classes);
        head.drop_rate = self.drop_rate;
        MobileVit {
            stem,
            stages,
            final_conv,
            exshortcuts,
            head: head.init(device),
            tap_stages: self.exshortcuts.iter().map(|t| t.stage).collect(),
        }
    }
}

/// A block of a stage: an inverted residual or a MobileViT block.
///
/// burn's derived `Module` for an enum adds the variant name to parameter paths
/// (`stages.2.1.MobileVit.conv_kxk…`); [`crate::state`] leaves enum variants out, so the keys
/// are timm's (`stages.2.1.conv_kxk…`).
// Both variants are ~2 KB of module handles and a model holds a few dozen: boxing would save
// nothing worth the indirection (and burn's derive does not see through `Box`).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum StageBlock<B: Backend> {
    /// MobileNetV2 inverted residual.
    Bottleneck(BottleneckBlock<B>),
    /// MobileViT block.
    MobileVit(MobileVitBlock<B>),
}

impl<B: Backend> StageBlock<B> {
    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            StageBlock::Bottleneck(b) => b.forward(x),
            StageBlock::MobileVit(b) => b.forward(x),
        }
    }

    /// Declared input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            StageBlock::Bottleneck(b) => b.in_channels(),
            StageBlock::MobileVit(b) => b.in_channels(),
        }
    }
}

/// MobileViT with optional ExShortcuts. Module names are timm's: `stem`, `stages.S.B`,
/// `final_conv`, `head.fc`, plus `exshortcuts.N` for ExMobileViT.
#[derive(Module, Debug)]
pub struct MobileVit<B: Backend> {
    /// 3x3 conv, stride 2, BN, SiLU.
    pub stem: ConvNormAct<B>,
    /// The stages.
    pub stages: Vec<Vec<StageBlock<B>>>,
    /// 1x1 conv to `num_features`, BN, SiLU.
    pub final_conv: ConvNormAct<B>,
    /// ExShortcut taps (empty for plain MobileViT).
    pub exshortcuts: Vec<ExShortcut<B>>,
    /// The classifier.
    pub head: ClassifierHead<B>,
    tap_stages: Vec<usize>,
}

/// Every named output of one forward pass.
#[derive(Debug, Clone)]
pub struct ModelOutputs<B: Backend> {
    /// Output of `stem`.
    pub stem: Tensor<B, 4>,
    /// Output of each stage.
    pub stages: Vec<Tensor<B, 4>>,
    /// Output of `final_conv`.
    pub final_conv: Tensor<B, 4>,
    /// Pooled output of each ExShortcut.
    pub exshortcuts: Vec<Tensor<B, 2>>,
    /// The classifier input (timm's `pre_logits`).
    pub pooled: Tensor<B, 2>,
    /// The logits.
    pub logits: Tensor<B, 2>,
}

impl<B: Backend> ModelOutputs<B> {
    /// `(name, values)` for every output, with timm's module names (`stem`, `stages.0`…,
    /// `final_conv`, `exshortcuts.N`, `pooled`, `logits`) and their true shapes.
    pub fn into_named_data(self) -> Vec<(String, TensorData)> {
        let mut out = vec![("stem".to_string(), self.stem.into_data())];
        out.extend(self.stages.into_iter().enumerate().map(|(i, t)| (format!("stages.{i}"), t.into_data())));
        out.push(("final_conv".to_string(), self.final_conv.into_data()));
        out.extend(self.exshortcuts.into_iter().enumerate().map(|(i, t)| (format!("exshortcuts.{i}"), t.into_data())));
        out.push(("pooled".to_string(), self.pooled.into_data()));
        out.push(("logits".to_string(), self.logits.into_data()));
        out
    }
}

impl<B: Backend> MobileVit<B> {
    /// Checks that `dims` is an NCHW batch with 3 channels.
    pub fn check_input(&self, dims: &[usize]) -> Result<(), ShapeError> {
        if dims.len() != 4 || dims[1] != self.stem.in_channels() {
            return Err(ShapeError::Mismatch {
                layer: "MobileVit input".to_string(),
                expected: format!("[N, {}, H, W] (NCHW)", self.stem.in_channels()),
                got: dims.to_vec(),
            });
        }
        Ok(())
    }

    /// Logits, `[N, 3, H, W]` → `[N, num_classes]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_all(x).logits
    }

    /// Every named output of the forward pass.
    pub fn forward_all(&self, x: Tensor<B, 4>) -> ModelOutputs<B> {
        if let Err(e) = self.check_input(&x.dims()) {
            panic!("{e}");
        }
        let stem = self.stem.forward(x);
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut h = stem.clone();
        for blocks in &self.stages {
            h = blocks.iter().fold(h, |h, b| b.forward(h));
            stages.push(h.clone());
        }
        let final_conv = self.final_conv.forward(h);
        let exshortcuts: Vec<Tensor<B, 2>> =
            self.exshortcuts.iter().zip(&self.tap_stages).map(|(tap, &s)| tap.forward(stages[s].clone())).collect();
        let pooled = Self::head_input(exshortcuts.clone(), &final_conv);
        let logits = self.head.forward(pooled.clone());
        ModelOutputs { stem, stages, final_conv, exshortcuts, pooled, logits }
    }

    /// The classifier's input: the ExShortcuts' pooled vectors, then `final_conv` pooled,
    /// concatenated (ExMobileViT's head; plain MobileViT: the pooled `final_conv` alone).
    fn head_input(mut shortcuts: Vec<Tensor<B, 2>>, final_conv: &Tensor<B, 4>) -> Tensor<B, 2> {
        shortcuts.push(global_avg_pool(final_conv.clone()));
        if shortcuts.len() == 1 {
            shortcuts.pop().expect("one part")
        } else {
            Tensor::cat(shortcuts, 1)
        }
    }

    /// The stage each ExShortcut taps, in the classifier's order.
    pub fn exshortcut_stages(&self) -> &[usize] {
        &self.tap_stages
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.head.out_channels()
    }
}

/// The value at a tap point: a feature map, or a vector (`pooled`).
#[derive(Debug, Clone)]
pub enum TapOutput<B: Backend> {
    /// `[N, C, H, W]`.
    Map(Tensor<B, 4>),
    /// `[N, C]`.
    Vector(Tensor<B, 2>),
}

/// An unknown tap name, with the model's tap names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}` has no tap `{name}`; its taps: {known}")]
pub struct UnknownTap {
    /// The model.
    pub model: String,
    /// The name asked for.
    pub name: String,
    /// The model's taps, comma-separated.
    pub known: String,
}

impl<B: Backend> MobileVit<B> {
    /// Every point of the forward pass that can be tapped, in forward order, with timm's module
    /// names: `stem`, each `stages.S`, inside each MobileViT block `stages.S.B.transformer.K`
    /// (transformer layer `K`'s output tokens) and `stages.S.B.norm` (the tokens after the
    /// final LayerNorm, before the fold), `final_conv`, each `exshortcuts.N` (its map after
    /// SiLU, before the pool) and `pooled` (the classifier input, a vector). Tokens are tapped
    /// as maps on the patch-aligned size ([`exvit_layers::TokenMaps`]).
    ///
    /// [`Self::forward_taps`] also takes `stages.S.B.transformer`, the name exvit ≤ 0.3 gave
    /// the post-norm tap, as an alias of `stages.S.B.norm` (older caches and scripts use it).
    pub fn tap_names(&self) -> Vec<String> {
        let mut v = vec!["stem".to_string()];
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, block) in blocks.iter().enumerate() {
                if let StageBlock::MobileVit(m) = block {
                    v.extend((0..m.transformer.len()).map(|k| format!("stages.{s}.{b}.transformer.{k}")));
                    v.push(format!("stages.{s}.{b}.norm"));
                }
            }
            v.push(format!("stages.{s}"));
        }
        v.push("final_conv".to_string());
        v.extend((0..self.exshortcuts.len()).map(|i| format!("exshortcuts.{i}")));
        v.push("pooled".to_string());
        v
    }

    /// `name`, with the legacy alias `stages.S.B.transformer` read as `stages.S.B.norm`.
    pub fn canonical_tap(name: &str) -> String {
        match name.strip_suffix(".transformer") {
            Some(block) if block.starts_with("stages.") && block.split('.').count() == 3 => format!("{block}.norm"),
            _ => name.to_string(),
        }
    }

    /// The values at `wanted` (names of [`Self::tap_names`]), in the order asked. The forward
    /// pass stops after the last stage a tap needs.
    pub fn forward_taps(
        &self,
        x: Tensor<B, 4>,
        wanted: &[String],
        model: &str,
    ) -> Result<Vec<TapOutput<B>>, UnknownTap> {
        let names = self.tap_names();
        let asked = wanted;
        let wanted: Vec<String> = asked.iter().map(|w| Self::canonical_tap(w)).collect();
        for (w, a) in wanted.iter().zip(asked) {
            if !names.contains(w) {
                return Err(UnknownTap { model: model.to_string(), name: a.clone(), known: names.join(", ") });
            }
        }
        if let Err(e) = self.check_input(&x.dims()) {
            panic!("{e}");
        }
        let is_wanted = |n: &str| wanted.iter().any(|w| w == n);
        let head_needed = wanted.iter().any(|w| w == "final_conv" || w == "pooled" || w.starts_with("exshortcuts."));
        // Stages whose output is needed: tapped ones, ExShortcut inputs, and all when the head is.
        let last_stage = if head_needed {
            self.stages.len()
        } else {
            wanted
                .iter()
                .filter_map(|w| w.strip_prefix("stages.")?.split('.').next()?.parse::<usize>().ok())
                .max()
                .map_or(0, |s| s + 1)
        };
        let mut found: Vec<(String, TapOutput<B>)> = Vec::new();
        let mut h = self.stem.forward(x);
        if is_wanted("stem") {
            found.push(("stem".into(), TapOutput::Map(h.clone())));
        }
        let mut stage_out = Vec::new();
        for (s, blocks) in self.stages.iter().enumerate().take(last_stage) {
            for (b, block) in blocks.iter().enumerate() {
                let prefix = format!("stages.{s}.{b}.");
                h = match block {
                    StageBlock::MobileVit(m) if wanted.iter().any(|w| w.starts_with(&prefix)) => {
                        let (out, maps) = m.forward_with_token_maps(h);
                        for (k, map) in maps.layers.into_iter().enumerate() {
                            found.push((format!("{prefix}transformer.{k}"), TapOutput::Map(map)));
                        }
                        found.push((format!("{prefix}norm"), TapOutput::Map(maps.norm)));
                        out
                    }
                    _ => block.forward(h),
                };
            }
            let name = format!("stages.{s}");
            if is_wanted(&name) {
                found.push((name, TapOutput::Map(h.clone())));
            }
            stage_out.push(h.clone());
        }
        if head_needed {
            let final_conv = self.final_conv.forward(h);
            let maps: Vec<Tensor<B, 4>> = self
                .exshortcuts
                .iter()
                .zip(&self.tap_stages)
                .map(|(t, &s)| t.forward_map(stage_out[s].clone()))
                .collect();
            if is_wanted("pooled") {
                let shortcuts = maps.iter().map(|m| global_avg_pool(m.clone())).collect();
                let pooled = Self::head_input(shortcuts, &final_conv);
                found.push(("pooled".into(), TapOutput::Vector(pooled)));
            }
            for (i, m) in maps.into_iter().enumerate() {
                let name = format!("exshortcuts.{i}");
                if is_wanted(&name) {
                    found.push((name, TapOutput::Map(m)));
                }
            }
            if is_wanted("final_conv") {
                found.push(("final_conv".into(), TapOutput::Map(final_conv)));
            }
        }
        Ok(wanted
            .iter()
            .map(|w| found.iter().find(|(n, _)| n == w).map(|(_, t)| t.clone()).expect("every wanted tap was computed"))
            .collect())
    }
}

/// What one MobileViT block's transformer did in a forward pass: its layers' tokens and
/// attention probabilities ([`BlockLayers`]), and where its input map lies in the image.
#[derive(Debug, Clone)]
pub struct BlockAttention<B: Backend> {
    /// The block's module name, `stages.S.B`.
    pub name: String,
    /// Input pixels per pixel of the block's map: the stem's and preceding blocks' strides
    /// multiplied (nominal: a stride-2 conv on an odd map still steps 2 pixels).
    pub stride: usize,
    /// The transformer's patch side.
    pub patch: usize,
    /// Its layers' tokens and attention.
    pub layers: BlockLayers<B>,
}

impl<B: Backend> MobileVit<B> {
    /// The names (`stages.S.B`) of the MobileViT blocks, in forward order.
    pub fn mobilevit_blocks(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, block) in blocks.iter().enumerate() {
                if matches!(block, StageBlock::MobileVit(_)) {
                    v.push(format!("stages.{s}.{b}"));
                }
            }
        }
        v
    }

    /// Runs the forward pass up to the last of the MobileViT blocks named in `blocks` (names of
    /// [`Self::mobilevit_blocks`]; every block when empty) and returns what each of them did,
    /// attention probabilities included (burn's generic attention, not the fused kernel), in
    /// forward order.
    pub fn forward_attention(
        &self,
        x: Tensor<B, 4>,
        blocks: &[String],
        model: &str,
    ) -> Result<Vec<BlockAttention<B>>, UnknownTap> {
        let all = self.mobilevit_blocks();
        for b in blocks {
            if !all.contains(b) {
                return Err(UnknownTap { model: model.to_string(), name: b.clone(), known: all.join(", ") });
            }
        }
        let wanted = |n: &str| blocks.is_empty() || blocks.iter().any(|b| b == n);
        let mut left = if blocks.is_empty() { all.len() } else { blocks.len() };
        if let Err(e) = self.check_input(&x.dims()) {
            panic!("{e}");
        }
        let mut stride = self.stem.stride();
        let mut h = self.stem.forward(x);
        let mut out = Vec::new();
        'stages: for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                if left == 0 {
                    break 'stages;
                }
                let name = format!("stages.{s}.{b}");
                h = match block {
                    StageBlock::MobileVit(m) if wanted(&name) => {
                        let (y, layers) = m.forward_with_layers(h);
                        out.push(BlockAttention { name, stride, patch: m.patch_size(), layers });
                        left -= 1;
                        y
                    }
                    _ => block.forward(h),
                };
                stride *= match block {
                    StageBlock::Bottleneck(b) => b.stride(),
                    StageBlock::MobileVit(m) => m.stride(),
                };
            }
        }
        Ok(out)
    }
}
