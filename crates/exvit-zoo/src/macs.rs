//! Multiply-accumulates of one forward pass, per image, counted from the built model and an
//! input size — the figure papers quote as "MACs" (or "FLOPs", meaning MACs).
//!
//! What counts is what `torch.utils.flop_counter.FlopCounterMode` counts (÷ 2, it counts a
//! multiply-add as two FLOPs): convolutions, linear layers and the attention's two matrix
//! products (q·kᵀ and probs·v). Normalisation, activations, softmax, adds, pooling and timm's
//! bilinear resize of odd maps are not counted (they are elementwise or nearly). BatchNorm
//! folded or not changes nothing. The test against PyTorch's counter on timm's models is
//! `tests/macs.rs` (fixture: `tools/parity/make_macs_fixtures.py`).
//!
//! # Example
//! ```
//! use burn_flex::{Flex, FlexDevice};
//! use exvit_zoo::{create_model, macs::count_macs};
//!
//! let model = create_model::<Flex>("mobilevit_xxs", 1000, &FlexDevice).unwrap();
//! let macs = count_macs(&model, [256, 256]);
//! assert_eq!(macs.modules[0].0, "stem");
//! assert_eq!(macs.total, macs.modules.iter().map(|(_, n)| n).sum::<u64>());
//! ```

use burn::prelude::*;
use exvit_layers::{Attention, Conv2d, Linear, MobileVitBlock, TransformerBlock, TypedLayer};
use serde::Serialize;

use crate::{MobileVit, StageBlock};

/// [`count_macs`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacCount {
    /// Input `[height, width]`.
    pub size: [usize; 2],
    /// Multiply-accumulates per image.
    pub total: u64,
    /// Per top-level module (`stem`, `stages.N`, `final_conv`, `exshortcuts`, `head`), in model
    /// order (the grouping of [`module_params`](crate::module_params)).
    pub modules: Vec<(String, u64)>,
}

/// A map's per-image shape `[channels, height, width]`.
type Shape = [usize; 3];

/// MACs of `conv` on a `[c, h, w]` map, and its output shape.
fn conv<B: Backend>(conv: &Conv2d<B>, [_, h, w]: Shape) -> (u64, Shape) {
    let k = conv.kernel_size();
    let (oh, ow, o) = (conv.output_size(h), conv.output_size(w), conv.out_channels());
    let per_output = (conv.in_channels() / conv.groups() * k * k) as u64;
    ((o * oh * ow) as u64 * per_output, [o, oh, ow])
}

/// MACs of `linear` on `tokens` rows.
fn linear<B: Backend>(linear: &Linear<B>, tokens: usize) -> u64 {
    (tokens * linear.in_channels() * linear.out_channels()) as u64
}

/// MACs of timm's attention over `seqs` sequences of `n` tokens: qkv and proj, then q·kᵀ and
/// probs·v (`n·n·head_dim` each per head, `n·n·dim` over the heads).
fn attention<B: Backend>(m: &Attention<B>, seqs: usize, n: usize) -> u64 {
    let d = m.in_channels();
    linear(&m.qkv, seqs * n) + linear(&m.proj, seqs * n) + 2 * (seqs * n * n * d) as u64
}

fn transformer_block<B: Backend>(m: &TransformerBlock<B>, seqs: usize, n: usize) -> u64 {
    attention(&m.attn, seqs, n) + linear(&m.mlp.fc1, seqs * n) + linear(&m.mlp.fc2, seqs * n)
}

fn mobilevit_block<B: Backend>(m: &MobileVitBlock<B>, x: Shape) -> (u64, Shape) {
    let (a, y) = conv(&m.conv_kxk.conv, x);
    let (b, y) = conv(&m.conv_1x1, y);
    let p = m.patch_size();
    // The unfold resizes an odd map up to whole patches: P = p² sequences of N = nh·nw tokens.
    let n = y[1].div_ceil(p) * y[2].div_ceil(p);
    let t: u64 = m.transformer.iter().map(|blk| transformer_block(blk, p * p, n)).sum();
    let (c, y) = conv(&m.conv_proj.conv, y);
    let (d, y) = conv(&m.conv_fusion.conv, [x[0] + y[0], y[1], y[2]]);
    (a + b + t + c + d, y)
}

/// Multiply-accumulates of `model`'s forward pass on one `[3, size[0], size[1]]` image (the
/// logits, with the ExShortcuts when the model has them).
pub fn count_macs<B: Backend>(model: &MobileVit<B>, size: [usize; 2]) -> MacCount {
    let mut modules = Vec::new();
    let (stem, mut x) = conv(&model.stem.conv, [3, size[0], size[1]]);
    modules.push(("stem".to_string(), stem));
    let mut stage_maps = Vec::new();
    for (s, blocks) in model.stages.iter().enumerate() {
        let mut macs = 0;
        for block in blocks {
            let (m, y) = match block {
                StageBlock::Bottleneck(b) => {
                    let (m1, y) = conv(&b.conv1_1x1.conv, x);
                    let (m2, y) = conv(&b.conv2_kxk.conv, y);
                    let (m3, y) = conv(&b.conv3_1x1.conv, y);
                    (m1 + m2 + m3, y)
                }
                StageBlock::MobileVit(b) => mobilevit_block(b, x),
            };
            macs += m;
            x = y;
        }
        modules.push((format!("stages.{s}"), macs));
        stage_maps.push(x);
    }
    modules.push(("final_conv".to_string(), conv(&model.final_conv.conv, x).0));
    if !model.exshortcuts.is_empty() {
        let taps = model.exshortcuts.iter().zip(model.exshortcut_stages());
        modules.push(("exshortcuts".to_string(), taps.map(|(tap, &s)| conv(&tap.conv, stage_maps[s]).0).sum()));
    }
    modules.push(("head".to_string(), linear(&model.head.fc, 1)));
    MacCount { size, total: modules.iter().map(|(_, n)| n).sum(), modules }
}
