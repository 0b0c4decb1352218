//! The MobileViT block, exactly as timm's `MobileVitBlock`.

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attention::{TransformerBlock, TransformerBlockConfig};
use crate::conv::{Conv2d, Conv2dConfig, ConvNormAct, ConvNormActConfig};
use crate::norm::{LayerNorm, LayerNormConfig};
// timm's resize (bilinear, align_corners=False), differentiable on every backend.
use crate::resize::resize_bilinear;
use crate::TypedLayer;

/// Configuration of [`MobileVitBlock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileVitBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (MobileViT: equal to the input).
    pub out_channels: usize,
    /// Kernel of `conv_kxk` and `conv_fusion` (3).
    pub kernel_size: usize,
    /// Token width of the transformer.
    pub transformer_dim: usize,
    /// Number of transformer blocks.
    pub transformer_depth: usize,
    /// Square patch size (MobileViT: 2).
    pub patch_size: usize,
    /// Attention heads (timm: 4).
    pub num_heads: usize,
    /// MLP ratio (timm: 2).
    pub mlp_ratio: f64,
    /// Attention-weight dropout.
    pub attn_drop: f64,
    /// Dropout after attention and in the MLP.
    pub drop: f64,
    /// Stochastic depth inside the transformer.
    pub drop_path: f64,
}

impl MobileVitBlockConfig {
    /// timm's defaults for MobileViT v1: k3, 4 heads, mlp_ratio 2, patch 2, no dropout.
    pub fn new(channels: usize, transformer_dim: usize, transformer_depth: usize) -> Self {
        Self {
            in_channels: channels,
            out_channels: channels,
            kernel_size: 3,
            transformer_dim,
            transformer_depth,
            patch_size: 2,
            num_heads: 4,
            mlp_ratio: 2.0,
            attn_drop: 0.0,
            drop: 0.0,
            drop_path: 0.0,
        }
    }

    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileVitBlock<B> {
        let d = self.transformer_dim;
        let mut block = TransformerBlockConfig::new(d, self.num_heads);
        block.mlp_ratio = self.mlp_ratio;
        block.attn.attn_drop = self.attn_drop;
        block.drop = self.drop;
        block.drop_path = self.drop_path;
        MobileVitBlock {
            conv_kxk: ConvNormActConfig::new(self.in_channels, self.in_channels, self.kernel_size).init(device),
            conv_1x1: Conv2dConfig::new(self.in_channels, d, 1).init(device),
            transformer: (0..self.transformer_depth).map(|_| block.init(device)).collect(),
            norm: LayerNormConfig::new(d).init(device),
            conv_proj: ConvNormActConfig::new(d, self.out_channels, 1).init(device),
            conv_fusion: ConvNormActConfig::new(
                self.in_channels + self.out_channels,
                self.out_channels,
                self.kernel_size,
            )
            .init(device),
            patch_size: self.patch_size,
        }
    }
}

/// Local conv (`conv_kxk`, `conv_1x1` without BN or bias), unfold into `p x p` patches, a
/// transformer over the patches at each position within a patch, LayerNorm, fold, `conv_proj`,
/// and `conv_fusion` over the concat `[block input, x]`.
///
/// Where H or W is not a multiple of the patch size, the map is resized bilinearly
/// (`align_corners=False`) up to the next multiple before the unfold and back after the fold,
/// as timm does.
#[derive(Module, Debug)]
pub struct MobileVitBlock<B: Backend> {
    /// Full `k x k` conv + BN + SiLU.
    pub conv_kxk: ConvNormAct<B>,
    /// `1x1` conv to the transformer width (no BN, no bias).
    pub conv_1x1: Conv2d<B>,
    /// The transformer blocks.
    pub transformer: Vec<TransformerBlock<B>>,
    /// LayerNorm after the transformer.
    pub norm: LayerNorm<B>,
    /// `1x1` conv back to the block's channels.
    pub conv_proj: ConvNormAct<B>,
    /// `k x k` conv over `[input, x]`.
    pub conv_fusion: ConvNormAct<B>,
    patch_size: usize,
}

impl<B: Backend> TypedLayer for MobileVitBlock<B> {
    fn in_channels(&self) -> usize {
        self.conv_kxk.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.conv_fusion.out_channels()
    }
}

impl<B: Backend> MobileVitBlock<B> {
    /// `[N, C, H, W]` → `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with_tokens(x).0
    }

    /// The block's output and the transformer's output before the fold (after the final
    /// LayerNorm), `[N·P, num_patches, transformer_dim]`, for feature taps.
    pub fn forward_with_tokens(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let shortcut = x.clone();
        let x = self.conv_1x1.forward(self.conv_kxk.forward(x));
        let [b, c, h, w] = x.dims();
        let (tokens, grid) = unfold(x, self.patch_size);
        let tokens = self.norm.forward(self.transformer.iter().fold(tokens, |t, blk| blk.forward(t)));
        let x = fold(tokens.clone(), b, c, grid, self.patch_size, [h, w]);
        let x = self.conv_proj.forward(x);
        (self.conv_fusion.forward(Tensor::cat(vec![shortcut, x], 1)), tokens)
    }
}

impl<B: Backend> MobileVitBlock<B> {
    /// The block's output and, as maps `[N, transformer_dim, H', W']`, each transformer layer's
    /// output tokens and the tokens after the final LayerNorm (`H'`, `W'`: the patch-aligned
    /// size; the fold is a permutation, so a map holds exactly the tokens' values). Runs the
    /// same (fused where available) layers as [`Self::forward`]; for per-layer feature taps.
    pub fn forward_with_token_maps(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, TokenMaps<B>) {
        let shortcut = x.clone();
        let x = self.conv_1x1.forward(self.conv_kxk.forward(x));
        let [b, c, h, w] = x.dims();
        let p = self.patch_size;
        let (mut t, grid) = unfold(x, p);
        let aligned = [grid.0 * p, grid.1 * p];
        let mut layers = Vec::with_capacity(self.transformer.len());
        for blk in &self.transformer {
            t = blk.forward(t);
            layers.push(fold(t.clone(), b, c, grid, p, aligned));
        }
        let normed = self.norm.forward(t);
        let norm = fold(normed.clone(), b, c, grid, p, aligned);
        let x = self.conv_proj.forward(fold(normed, b, c, grid, p, [h, w]));
        (self.conv_fusion.forward(Tensor::cat(vec![shortcut, x], 1)), TokenMaps { layers, norm })
    }

    /// Patch side.
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// The block's output, and what each transformer layer does inside it (for per-layer taps
    /// and attention analysis): see [`BlockLayers`]. Runs burn's generic attention.
    pub fn forward_with_layers(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, BlockLayers<B>) {
        let shortcut = x.clone();
        let x = self.conv_1x1.forward(self.conv_kxk.forward(x));
        let [b, c, h, w] = x.dims();
        let (mut t, grid) = unfold(x, self.patch_size);
        let (mut tokens, mut attention) = (Vec::new(), Vec::new());
        for blk in &self.transformer {
            let (next, probs) = blk.forward_with_attention(t);
            tokens.push(next.clone());
            attention.push(probs);
            t = next;
        }
        let normed = self.norm.forward(t);
        let x = fold(normed.clone(), b, c, grid, self.patch_size, [h, w]);
        let x = self.conv_proj.forward(x);
        let out = self.conv_fusion.forward(Tensor::cat(vec![shortcut, x], 1));
        (out, BlockLayers { tokens, attention, normed, grid, map: (h, w), batch: b })
    }
}

/// The tokens of one [`MobileVitBlock`]'s transformer folded back to maps
/// `[N, transformer_dim, H', W']` on the patch-aligned size: timm's
/// `stages.S.B.transformer.K` (each layer's output) and `stages.S.B.norm`.
#[derive(Debug, Clone)]
pub struct TokenMaps<B: Backend> {
    /// Each transformer layer's output, in order.
    pub layers: Vec<Tensor<B, 4>>,
    /// The last layer's output after the final LayerNorm (what the block folds back).
    pub norm: Tensor<B, 4>,
}

/// What the transformer layers of one [`MobileVitBlock`] computed for a batch.
#[derive(Debug, Clone)]
pub struct BlockLayers<B: Backend> {
    /// Each layer's output tokens, `[N·P, num_patches, dim]` (before the final LayerNorm).
    pub tokens: Vec<Tensor<B, 3>>,
    /// Each layer's attention probabilities, `[N·P, heads, num_patches, num_patches]`.
    pub attention: Vec<Tensor<B, 4>>,
    /// The last layer's tokens after the final LayerNorm (what the block folds back).
    pub normed: Tensor<B, 3>,
    /// The patch grid `(n_h, n_w)` (of the map resized up to multiples of the patch side).
    pub grid: (usize, usize),
    /// The map the transformer's unfold took, `(H, W)` before any resize.
    pub map: (usize, usize),
    /// Images in the batch (`N`).
    pub batch: usize,
}

impl<B: Backend> BlockLayers<B> {
    /// `tokens` (`[N·P, num_patches, C]`) folded back to a map `[N, C, H', W']` on the
    /// patch-aligned size (a permutation of the tokens' values).
    pub fn token_map(&self, tokens: Tensor<B, 3>, patch: usize) -> Tensor<B, 4> {
        let c = tokens.dims()[2];
        let (nh, nw) = self.grid;
        fold(tokens, self.batch, c, self.grid, patch, [nh * patch, nw * patch])
    }
}

/// Patch grid of an unfold: `(n_h, n_w)`.
type Grid = (usize, usize);

/// `[B, C, H, W]` → `[B·P, N, C]`, `P = p²` positions within a patch, `N = n_h·n_w` patches.
/// Resizes to multiples of `p` first where needed.
pub fn unfold<B: Backend>(x: Tensor<B, 4>, p: usize) -> (Tensor<B, 3>, Grid) {
    let [_, _, h, w] = x.dims();
    let (new_h, new_w) = (h.div_ceil(p) * p, w.div_ceil(p) * p);
    let x = if (new_h, new_w) != (h, w) { resize_bilinear(x, [new_h, new_w]) } else { x };
    // [B, C, nh, ph, nw, pw] -> [B, ph, pw, nh, nw, C]
    (crate::fast::unfold_patches(x, p), (new_h / p, new_w / p))
}

/// The inverse of [`unfold`]: `[B·P, N, C]` → `[B, C, H, W]`, resized back to `size`.
pub fn fold<B: Backend>(
    t: Tensor<B, 3>,
    b: usize,
    c: usize,
    (nh, nw): Grid,
    p: usize,
    size: [usize; 2],
) -> Tensor<B, 4> {
    assert_eq!(t.dims()[2], c, "fold: tokens of {} channels, expected {c}", t.dims()[2]);
    // [B, ph, pw, nh, nw, C] -> [B, C, nh, ph, nw, pw]
    let x = crate::fast::fold_patches(t, b, (nh, nw), p);
    if [nh * p, nw * p] != size {
        resize_bilinear(x, size)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    fn input(b: usize, c: usize, h: usize, w: usize) -> Tensor<Flex, 4> {
        let v: Vec<f32> = (0..b * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        Tensor::from_data(TensorData::new(v, [b, c, h, w]), &FlexDevice)
    }

    fn max_diff(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn the_per_layer_path_equals_the_fused_forward_and_its_attention_rows_sum_to_one() {
        let block = MobileVitBlockConfig::new(8, 16, 3).init::<Flex>(&FlexDevice);
        // An even map and an odd one (resized up to 4 x 6 before the unfold, as timm does).
        for (h, w) in [(6, 4), (3, 5)] {
            let x = input(2, 8, h, w);
            let (out, layers) = block.forward_with_layers(x.clone());
            let (fused, tokens) = block.forward_with_tokens(x);
            assert!(max_diff(out, fused) < 1e-5);
            assert!((layers.normed.clone() - tokens).abs().max().into_scalar() < 1e-5);
            let (nh, nw) = (h.div_ceil(2), w.div_ceil(2));
            assert_eq!((layers.grid, layers.map, layers.batch), ((nh, nw), (h, w), 2));
            assert_eq!((layers.tokens.len(), layers.attention.len()), (3, 3));
            for a in &layers.attention {
                // [B·P, heads, N, N]: MobileVitBlockConfig's 4 heads, 2·4 sequences.
                assert_eq!(a.dims(), [2 * 4, 4, nh * nw, nh * nw]);
                let rows = a.clone().sum_dim(3);
                assert!((rows - 1.0).abs().max().into_scalar() < 1e-5);
            }
            let map = layers.token_map(layers.tokens[2].clone(), 2);
            assert_eq!(map.dims(), [2, 16, nh * 2, nw * 2]);
        }
    }
}
