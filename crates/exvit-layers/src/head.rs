//! The ExShortcut feature tap and the classifier head.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::conv::{conv_bn_act, Act, Conv2d, Conv2dConfig};
use crate::linear::{Linear, LinearConfig};
use crate::norm::{BatchNorm2d, BatchNorm2dConfig};
use crate::TypedLayer;

/// Global average pool: `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n * c, h * w]).mean_dim(1).reshape([n, c])
}

/// Configuration of [`ExShortcut`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExShortcutConfig {
    /// Channels of the tapped feature map.
    pub in_channels: usize,
    /// Features this tap adds to the classifier input.
    pub out_channels: usize,
}

impl ExShortcutConfig {
    /// A tap `in -> out`.
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self { in_channels, out_channels }
    }

    /// Builds the tap.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ExShortcut<B> {
        ExShortcut {
            conv: Conv2dConfig::new(self.in_channels, self.out_channels, 1).init(device),
            bn: BatchNorm2dConfig::new(self.out_channels).init(device),
        }
    }
}

/// ExMobileViT's shortcut from an early stage to the classifier: 1x1 conv (no bias) +
/// BatchNorm2d + SiLU + a true global average pool (the authors' AvgPool2d(25)/(9) averaged
/// only a top-left window).
#[derive(Module, Debug)]
pub struct ExShortcut<B: Backend> {
    /// `1x1` conv, no bias.
    pub conv: Conv2d<B>,
    /// BatchNorm.
    pub bn: BatchNorm2d<B>,
}

impl<B: Backend> TypedLayer for ExShortcut<B> {
    fn in_channels(&self) -> usize {
        self.conv.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }
}

impl<B: Backend> ExShortcut<B> {
    /// The tap's map before pooling, `[N, out, H, W]`.
    pub fn forward_map(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_bn_act(&self.conv, &self.bn, Act::Silu, x)
    }

    /// `[N, in, H, W]` → `[N, out]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        global_avg_pool(self.forward_map(x))
    }
}

/// Configuration of [`ClassifierHead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierHeadConfig {
    /// Width of the pooled features.
    pub in_features: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Dropout before `fc`.
    pub drop_rate: f64,
}

impl ClassifierHeadConfig {
    /// No dropout.
    pub fn new(in_features: usize, num_classes: usize) -> Self {
        Self { in_features, num_classes, drop_rate: 0.0 }
    }

    /// Builds the head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassifierHead<B> {
        ClassifierHead {
            fc: LinearConfig::new(self.in_features, self.num_classes).init(device),
            drop: DropoutConfig::new(self.drop_rate).init(),
        }
    }
}

/// timm's `ClassifierHead` after the pool: dropout, then `fc`.
#[derive(Module, Debug)]
pub struct ClassifierHead<B: Backend> {
    /// The classifier.
    pub fc: Linear<B>,
    drop: Dropout,
}

impl<B: Backend> TypedLayer for ClassifierHead<B> {
    fn in_channels(&self) -> usize {
        self.fc.in_channels()
    }
    fn out_channels(&self) -> usize {
        self.fc.out_channels()
    }
}

impl<B: Backend> ClassifierHead<B> {
    /// `[N, in_features]` → `[N, num_classes]`.
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc.forward(self.drop.forward(pooled))
    }
}
