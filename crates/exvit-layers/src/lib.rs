//! Typed-shape layers for MobileViT and ExMobileViT.
//!
//! Every layer is a burn [`Module`](burn::module::Module) built from a serde-serialisable
//! config. Each declares its input channels, output channels and stride, and checks the shape of
//! what it is given: a wrong input panics with a message that names the layer and both shapes
//! (use [`ShapeError`] / the `check_*` helpers to get the same as a `Result`).
//!
//! Field names equal timm's module names, so the parameter paths of a model built from these
//! layers are timm's `state_dict` keys (`stem.conv.weight`,
//! `stages.2.1.transformer.0.attn.qkv.weight`, ...). Linear weights are stored `[out, in]` as in
//! PyTorch.
//!
//! Train/eval behaviour follows burn: a layer runs in training mode when the backend has
//! autodiff enabled (`B::ad_enabled()`), so evaluation on the training backend means
//! `model.valid()`.

pub mod attention;
pub mod conv;
pub mod drop;
pub mod fast;
pub mod head;
pub mod init;
pub mod inverted_residual;
pub mod linear;
pub mod memory;
pub mod mobilevit_block;
pub mod norm;
pub mod precision;
pub mod resize;
mod shape;

pub use attention::{Attention, AttentionConfig, Mlp, TransformerBlock, TransformerBlockConfig};
pub use conv::{Act, Conv2d, Conv2dConfig, ConvNormAct, ConvNormActConfig};
pub use drop::DropPath;
pub use head::{ClassifierHead, ClassifierHeadConfig, ExShortcut, ExShortcutConfig};
pub use inverted_residual::{BottleneckBlock, BottleneckBlockConfig};
pub use linear::{Linear, LinearConfig};
pub use mobilevit_block::{BlockLayers, MobileVitBlock, MobileVitBlockConfig, TokenMaps};
pub use norm::{BatchNorm2d, BatchNorm2dConfig, LayerNorm, LayerNormConfig};
pub use shape::{check_channels, check_last_dim, ShapeError};

/// What every layer of a feature pyramid declares about itself.
pub trait TypedLayer {
    /// Channels expected at the input (dim 1 of NCHW, or the last dim of a token tensor).
    fn in_channels(&self) -> usize;
    /// Channels produced at the output.
    fn out_channels(&self) -> usize;
    /// Spatial stride of the layer (1 when it keeps the resolution).
    fn stride(&self) -> usize {
        1
    }
}
