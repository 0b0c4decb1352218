//! The MobileNetV2 inverted residual, as timm's byobnet `BottleneckBlock` builds it for MobileViT
//! (`bottle_in=True, linear_out=True, gs=1`).

use burn::module::{Module, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::conv::{Act, ConvNormAct, ConvNormActConfig};
use crate::TypedLayer;

/// timm's `make_divisible(v, divisor=8)`: round to the nearest multiple of `divisor`, never
/// going below 90% of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (divisor).max(((v + d / 2.0) as usize) / divisor * divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// Configuration of [`BottleneckBlock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BottleneckBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Expansion ("bottle ratio" applied to the input channels, rounded by `make_divisible`).
    pub bottle_ratio: f64,
    /// Stride of the depthwise conv.
    pub stride: usize,
    /// Zero the last BN's weight when there is a residual (timm's `zero_init_last`).
    pub zero_init_last: bool,
}

impl BottleneckBlockConfig {
    /// An inverted residual `in -> in·ratio -> out`.
    pub fn new(in_channels: usize, out_channels: usize, bottle_ratio: f64, stride: usize) -> Self {
        Self { in_channels, out_channels, bottle_ratio, stride, zero_init_last: true }
    }

    /// Expanded width: `make_divisible(in · ratio, 8)`.
    pub fn mid_channels(&self) -> usize {
        make_divisible(self.in_channels as f64 * self.bottle_ratio, 8)
    }

    /// Whether the block has an identity shortcut (same channels, stride 1).
    pub fn has_shortcut(&self) -> bool {
        self.in_channels == self.out_channels && self.stride == 1
    }

    /// Builds the block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BottleneckBlock<B> {
        let mid = self.mid_channels();
        let mut conv3_1x1 = ConvNormActConfig::new(mid, self.out_channels, 1).with_act(Act::Identity).init(device);
        if self.zero_init_last && self.has_shortcut() {
            // A fresh trainable parameter (mapping the old one would drop `require_grad`).
            conv3_1x1.bn.weight = Param::from_tensor(Tensor::zeros([self.out_channels], device));
        }
        BottleneckBlock {
            conv1_1x1: ConvNormActConfig::new(self.in_channels, mid, 1).init(device),
            conv2_kxk: ConvNormActConfig::new(mid, mid, 3).with_stride(self.stride).with_groups(mid).init(device),
            conv3_1x1,
            shortcut: self.has_shortcut(),
        }
    }
}

/// Expand 1x1 (BN, SiLU) → depthwise 3x3 (BN, SiLU) → project 1x1 (BN, linear), plus the
/// input where timm has an identity shortcut (same channels and stride 1).
#[derive(Module, Debug)]
pub struct BottleneckBlock<B: Backend> {
    /// Expansion.
    pub conv1_1x1: ConvNormAct<B>,
    /// Depthwise conv.
    pub conv2_kxk: ConvNormAct<B>,
    /// Projection (no activation).
    pub conv3_1x1: ConvNormAct<B>,
    shortcut: bool,
}

impl<B: Backend> TypedLayer for BottleneckBlock<B> {
    fn in_channels(&self) -> usize {
        self.conv1_1x1.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.conv3_1x1.out_channels()
    }
    fn stride(&self) -> usize {
        self.conv2_kxk.stride()
    }
}

impl<B: Backend> BottleneckBlock<B> {
    /// Whether the block adds its input to its output.
    pub fn has_shortcut(&self) -> bool {
        self.shortcut
    }

    /// `[N, in, H, W]` → `[N, out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv3_1x1.forward(self.conv2_kxk.forward(self.conv1_1x1.forward(x.clone())));
        if self.shortcut {
            y.add(x)
        } else {
            y
        }
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn make_divisible_matches_timm() {
        // Values from timm.layers.make_divisible.
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(96.0, 8), 96);
        assert_eq!(make_divisible(3.0, 8), 8);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(make_divisible(19.0, 8), 24);
        assert_eq!(make_divisible(11.0, 8), 16);
        assert_eq!(make_divisible(12.0, 8), 16);
        assert_eq!(make_divisible(10.0, 8), 16);
        assert_eq!(make_divisible(9.0, 8), 16);
    }
}
