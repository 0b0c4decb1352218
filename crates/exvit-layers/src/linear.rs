//! `torch.nn.Linear` with the weight stored `[out, in]`, as in PyTorch checkpoints.

use burn::module::{Module, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::init::WeightInit;
use crate::shape::{check_last_dim, or_panic};
use crate::TypedLayer;

/// Configuration of [`Linear`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearConfig {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// Whether there is a bias.
    pub bias: bool,
    /// Weight initialiser (bias starts at 0).
    pub init: WeightInit,
}

impl LinearConfig {
    /// With bias, and timm byobnet's init (`normal_(0, 0.01)`).
    pub fn new(d_in: usize, d_out: usize) -> Self {
        Self { d_in, d_out, bias: true, init: WeightInit::Normal { std: 0.01 } }
    }

    /// Sets the weight initialiser.
    pub fn with_init(mut self, init: WeightInit) -> Self {
        self.init = init;
        self
    }

    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.init.sample([self.d_out, self.d_in], self.d_out, device)),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.d_out], device))),
            d_in: self.d_in,
            d_out: self.d_out,
        }
    }
}

/// `y = x Wᵀ + b` with `W: [out, in]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]`, PyTorch's layout.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    d_in: usize,
    d_out: usize,
}

impl<B: Backend> TypedLayer for Linear<B> {
    fn in_channels(&self) -> usize {
        self.d_in
    }
    fn out_channels(&self) -> usize {
        self.d_out
    }
}

impl<B: Backend> Linear<B> {
    /// Applies the layer to the last dimension of `[.., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_act(x, false)
    }

    /// [`forward`](Self::forward), then SiLU (fused into the kernel on burn-flex).
    pub fn forward_silu<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward_act(x, true)
    }

    fn forward_act<const D: usize>(&self, x: Tensor<B, D>, silu: bool) -> Tensor<B, D> {
        let dims = x.dims();
        or_panic(check_last_dim(&|| format!("Linear({}->{})", self.d_in, self.d_out), dims, self.d_in));
        let rows: usize = dims[..D - 1].iter().product();
        let y = crate::fast::linear(
            x.reshape([rows, self.d_in]),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            silu,
        );
        let mut out = dims;
        out[D - 1] = self.d_out;
        y.reshape(out)
    }
}
