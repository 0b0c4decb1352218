//! timm's ViT pieces: multi-head self-attention with a packed `qkv`, the MLP, and the
//! pre-norm transformer block.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::drop::DropPath;
use crate::init::WeightInit;
use crate::linear::{Linear, LinearConfig};
use crate::norm::{LayerNorm, LayerNormConfig};
use crate::shape::{check_last_dim, or_panic};
use crate::TypedLayer;

/// Configuration of [`Attention`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionConfig {
    /// Token width.
    pub dim: usize,
    /// Number of heads; must divide `dim`.
    pub num_heads: usize,
    /// Bias on `qkv` (timm MobileViT: true).
    pub qkv_bias: bool,
    /// Dropout on the attention weights.
    pub attn_drop: f64,
    /// Dropout after `proj`.
    pub proj_drop: f64,
    /// Initialiser of `qkv` and `proj`.
    pub init: WeightInit,
}

impl AttentionConfig {
    /// `qkv` with bias, no dropout, timm byobnet's Linear init.
    pub fn new(dim: usize, num_heads: usize) -> Self {
        Self { dim, num_heads, qkv_bias: true, attn_drop: 0.0, proj_drop: 0.0, init: WeightInit::Normal { std: 0.01 } }
    }

    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        assert!(
            self.num_heads > 0 && self.dim.is_multiple_of(self.num_heads),
            "Attention: dim {} is not divisible by num_heads {}",
            self.dim,
            self.num_heads
        );
        let mut qkv = LinearConfig::new(self.dim, 3 * self.dim).with_init(self.init);
        qkv.bias = self.qkv_bias;
        Attention {
            qkv: qkv.init(device),
            proj: LinearConfig::new(self.dim, self.dim).with_init(self.init).init(device),
            attn_drop: DropoutConfig::new(self.attn_drop).init(),
            proj_drop: DropoutConfig::new(self.proj_drop).init(),
            dim: self.dim,
            num_heads: self.num_heads,
        }
    }
}

/// timm's `Attention`: one packed `qkv` Linear (`[3·dim, dim]`, q then k then v, each split
/// into heads), scaled dot-product softmax attention, and `proj`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Packed query/key/value projection.
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
    attn_drop: Dropout,
    proj_drop: Dropout,
    dim: usize,
    num_heads: usize,
}

impl<B: Backend> TypedLayer for Attention<B> {
    fn in_channels(&self) -> usize {
        self.dim
    }
    fn out_channels(&self) -> usize {
        self.dim
    }
}

impl<B: Backend> Attention<B> {
    /// Attention heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// `[B, N, dim]` → `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dims = x.dims();
        or_panic(check_last_dim(&|| format!("Attention(dim {}, heads {})", self.dim, self.num_heads), dims, self.dim));
        let qkv = self.qkv.forward(x);
        // Fused (no copies of q, k, v) where the backend allows and no dropout acts on the weights.
        let y = if self.attn_drop.prob == 0.0 {
            crate::fast::attention(qkv, self.num_heads)
        } else {
            crate::fast::attention_generic(qkv, self.num_heads, |a| self.attn_drop.forward(a))
        };
        self.proj_drop.forward(self.proj.forward(y))
    }

    /// [`Attention::forward`] that also returns the attention probabilities, `[B, heads, N, N]`
    /// (each query's softmax over the keys: what timm's `attn_drop` receives), for analysis.
    /// Always burn's generic path, slower than the fused one.
    pub fn forward_with_probs(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let dims = x.dims();
        or_panic(check_last_dim(&|| format!("Attention(dim {}, heads {})", self.dim, self.num_heads), dims, self.dim));
        let qkv = self.qkv.forward(x);
        let probs = std::cell::RefCell::new(None);
        let y = crate::fast::attention_generic(qkv, self.num_heads, |a| {
            *probs.borrow_mut() = Some(a.clone());
            self.attn_drop.forward(a)
        });
        let probs = probs.into_inner().expect("the attention ran");
        (self.proj_drop.forward(self.proj.forward(y)), probs)
    }
}

/// timm's `Mlp`: `fc1`, SiLU, dropout, `fc2`, dropout.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `dim -> hidden`.
    pub fc1: Linear<B>,
    /// `hidden -> dim`.
    pub fc2: Linear<B>,
    drop: Dropout,
}

impl<B: Backend> Mlp<B> {
    /// `[.., dim]` → `[.., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = self.drop.forward(self.fc1.forward_silu(x));
        self.drop.forward(self.fc2.forward(x))
    }
}

/// Configuration of [`TransformerBlock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerBlockConfig {
    /// The attention.
    pub attn: AttentionConfig,
    /// MLP hidden width as a multiple of `dim` (MobileViT: 2).
    pub mlp_ratio: f64,
    /// Dropout in the MLP.
    pub drop: f64,
    /// Stochastic-depth probability of both residual branches.
    pub drop_path: f64,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl TransformerBlockConfig {
    /// MobileViT's block: mlp_ratio 2, no dropout, LayerNorm eps 1e-5.
    pub fn new(dim: usize, num_heads: usize) -> Self {
        Self { attn: AttentionConfig::new(dim, num_heads), mlp_ratio: 2.0, drop: 0.0, drop_path: 0.0, norm_eps: 1e-5 }
    }

    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        let dim = self.attn.dim;
        let hidden = (dim as f64 * self.mlp_ratio) as usize;
        let norm = LayerNormConfig { dim, eps: self.norm_eps };
        TransformerBlock {
            norm1: norm.init(device),
            attn: AttentionConfig { proj_drop: self.drop, ..self.attn.clone() }.init(device),
            norm2: norm.init(device),
            mlp: Mlp {
                fc1: LinearConfig::new(dim, hidden).with_init(self.attn.init).init(device),
                fc2: LinearConfig::new(hidden, dim).with_init(self.attn.init).init(device),
                drop: DropoutConfig::new(self.drop).init(),
            },
            drop_path: DropPath::new(self.drop_path),
        }
    }
}

/// timm's ViT `Block`, pre-norm: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, each branch
/// through DropPath.
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    /// LayerNorm before the attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
    drop_path: DropPath,
}

impl<B: Backend> TypedLayer for TransformerBlock<B> {
    fn in_channels(&self) -> usize {
        self.attn.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.attn.out_channels()
    }
}

impl<B: Backend> TransformerBlock<B> {
    /// `[B, N, dim]` → `[B, N, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone().add(self.drop_path.forward(self.attn.forward(self.norm1.forward(x))));
        x.clone().add(self.drop_path.forward(self.mlp.forward(self.norm2.forward(x))))
    }

    /// [`TransformerBlock::forward`] and its attention probabilities, `[B, heads, N, N]`
    /// ([`Attention::forward_with_probs`]).
    pub fn forward_with_attention(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (a, probs) = self.attn.forward_with_probs(self.norm1.forward(x.clone()));
        let x = x.add(self.drop_path.forward(a));
        (x.clone().add(self.drop_path.forward(self.mlp.forward(self.norm2.forward(x)))), probs)
    }
}
