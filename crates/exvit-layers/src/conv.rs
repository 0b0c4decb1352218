//! Convolutions: a plain `Conv2d` and timm's `ConvNormAct` (conv + BatchNorm2d + activation).

use crate::fast::{silu, Epilogue};
use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

use crate::init::WeightInit;
use crate::norm::{BatchNorm2d, BatchNorm2dConfig};
use crate::precision::in_dtype;
use crate::shape::{check_channels, or_panic};
use crate::TypedLayer;

/// Activation after a normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Act {
    /// SiLU (swish), MobileViT's activation.
    #[default]
    Silu,
    /// No activation (the linear output of an inverted residual).
    Identity,
}

impl Act {
    /// Applies the activation.
    pub fn apply<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Act::Silu => silu(x),
            Act::Identity => x,
        }
    }
}

/// Configuration of [`Conv2d`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Groups (`in_channels` for a depthwise conv).
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
    /// Weight initialiser; timm byobnet's is `KaimingNormalFanOut`.
    pub init: WeightInit,
}

impl Conv2dConfig {
    /// A `k x k` conv, stride 1, one group, no bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            groups: 1,
            bias: false,
            init: WeightInit::KaimingNormalFanOut,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Adds (or removes) the bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// timm's symmetric "same-ish" padding: `((stride - 1) + (k - 1)) / 2`.
    pub fn padding(&self) -> usize {
        ((self.stride - 1) + (self.kernel_size - 1)) / 2
    }

    /// Builds the layer.
    ///
    /// # Panics
    /// When the channels are not divisible by the groups, or the kernel/stride is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv2d<B> {
        assert!(
            self.groups > 0
                && self.in_channels.is_multiple_of(self.groups)
                && self.out_channels.is_multiple_of(self.groups),
            "Conv2d({}->{}): channels must be divisible by groups={}",
            self.in_channels,
            self.out_channels,
            self.groups
        );
        assert!(self.kernel_size > 0 && self.stride > 0, "Conv2d: kernel size and stride must be positive");
        let k = self.kernel_size;
        let fan_out = k * k * self.out_channels / self.groups;
        Conv2d {
            weight: Param::from_tensor(self.init.sample(
                [self.out_channels, self.in_channels / self.groups, k, k],
                fan_out,
                device,
            )),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.out_channels], device))),
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel_size: k,
            stride: self.stride,
            padding: self.padding(),
            groups: self.groups,
        }
    }
}

/// `torch.nn.Conv2d` with square kernels, no dilation and timm's padding.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[out, in/groups, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl<B: Backend> TypedLayer for Conv2d<B> {
    fn in_channels(&self) -> usize {
        self.in_channels
    }
    fn out_channels(&self) -> usize {
        self.out_channels
    }
    fn stride(&self) -> usize {
        self.stride
    }
}

impl<B: Backend> Conv2d<B> {
    /// Side of the square kernel.
    pub fn kernel_size(&self) -> usize {
        self.kernel_size
    }

    /// Zero padding on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// Groups (`in_channels` for a depthwise conv).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The output side for an input side `n` (PyTorch's, dilation 1).
    pub fn output_size(&self, n: usize) -> usize {
        (n + 2 * self.padding - self.kernel_size) / self.stride + 1
    }

    pub(crate) fn describe(&self) -> String {
        let g = if self.groups > 1 { format!(", g{}", self.groups) } else { String::new() };
        format!("Conv2d({}->{}, k{}, s{}{g})", self.in_channels, self.out_channels, self.kernel_size, self.stride)
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups)
    }

    /// Checks `x` against the declared input channels, as a `Result`.
    pub fn check(&self, dims: [usize; 4]) -> Result<(), crate::ShapeError> {
        check_channels(&|| self.describe(), dims, self.in_channels)
    }

    /// `[N, in, H, W]` → `[N, out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        or_panic(self.check(x.dims()));
        self.conv(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()).into())
    }

    /// burn's `conv2d`, or on burn-flex the fused 1x1 (pointwise), im2col (dense) or depthwise
    /// conv, followed by `epi`.
    fn conv(&self, x: Tensor<B, 4>, w: Tensor<B, 4>, epi: Epilogue<B>) -> Tensor<B, 4> {
        if self.kernel_size == 1 && self.stride == 1 && self.padding == 0 && self.groups == 1 {
            crate::fast::conv1x1(x, w, epi)
        } else if self.groups == 1 {
            crate::fast::conv2d_dense(x, w, epi, self.stride, self.padding)
        } else if self.groups == self.in_channels && self.groups == self.out_channels {
            crate::fast::conv2d_depthwise(x, w, epi, self.stride, self.padding)
        } else {
            let options = self.options();
            epi.generic(x, w, |x, w, b| conv2d(x, w, b, options))
        }
    }

    /// The conv with its output scaled per channel, shifted and activated:
    /// `act(conv(x)·scale + shift)`, an eval-mode BatchNorm and its activation folded in. On
    /// burn-flex f32 one fused kernel (see [`Epilogue`]); elsewhere one conv with folded weights
    /// and bias, then the activation.
    fn forward_folded(&self, x: Tensor<B, 4>, scale: Tensor<B, 1>, shift: Tensor<B, 1>, act: Act) -> Tensor<B, 4> {
        or_panic(self.check(x.dims()));
        let w = self.weight.val();
        // The BN's f32 scale and shift join a half-precision (bf16 view) conv in its dtype.
        let (scale, shift) = (in_dtype(scale, w.dtype()), in_dtype(shift, w.dtype()));
        let shift = match &self.bias {
            Some(b) => b.val().mul(scale.clone()).add(shift),
            None => shift,
        };
        self.conv(x, w, Epilogue { scale: Some(scale), shift: Some(shift), silu: act == Act::Silu })
    }
}

/// Configuration of [`ConvNormAct`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNormActConfig {
    /// The convolution (timm builds it without bias).
    pub conv: Conv2dConfig,
    /// The activation after the BatchNorm.
    pub act: Act,
}

impl ConvNormActConfig {
    /// A `k x k` conv (no bias) + BatchNorm2d + SiLU, stride 1, one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Self { conv: Conv2dConfig::new(in_channels, out_channels, kernel_size), act: Act::Silu }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.conv.stride = stride;
        self
    }

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.conv.groups = groups;
        self
    }

    /// Sets the activation.
    pub fn with_act(mut self, act: Act) -> Self {
        self.act = act;
        self
    }

    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvNormAct<B> {
        ConvNormAct {
            conv: self.conv.init(device),
            bn: BatchNorm2dConfig::new(self.conv.out_channels).init(device),
            act: self.act,
        }
    }
}

/// timm's `ConvNormAct`: `conv` (no bias), `bn` (BatchNorm2d), then the activation.
///
/// At inference the BatchNorm is folded into the conv's weights and bias, so the block is one
/// conv (with bias) and one activation.
#[derive(Module, Debug)]
pub struct ConvNormAct<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// The BatchNorm.
    pub bn: BatchNorm2d<B>,
    act: Act,
}

impl<B: Backend> TypedLayer for ConvNormAct<B> {
    fn in_channels(&self) -> usize {
        self.conv.in_channels
    }
    fn out_channels(&self) -> usize {
        self.conv.out_channels
    }
    fn stride(&self) -> usize {
        self.conv.stride
    }
}

impl<B: Backend> ConvNormAct<B> {
    /// `[N, in, H, W]` → `[N, out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_bn_act(&self.conv, &self.bn, self.act, x)
    }

    /// The activation.
    pub fn act(&self) -> Act {
        self.act
    }
}

/// `act(bn(conv(x)))`: batch statistics when the backend records gradients; otherwise the BN
/// and the activation in the conv's epilogue (see [`Conv2d::forward_folded`]).
pub(crate) fn conv_bn_act<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm2d<B>,
    act: Act,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) {
        match act {
            Act::Silu => bn.forward_silu(conv.forward(x)),
            Act::Identity => bn.forward(conv.forward(x)),
        }
    } else {
        let (scale, shift) = bn.folded();
        conv.forward_folded(x, scale, shift, act)
    }
}
