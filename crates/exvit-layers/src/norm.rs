//! Normalisation layers with PyTorch's exact semantics and timm's parameter names.

use burn::module::{Module, Param, RunningState};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::shape::{check_channels, check_last_dim, or_panic};
use crate::TypedLayer;

/// Configuration of [`BatchNorm2d`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm2dConfig {
    /// Number of channels.
    pub num_features: usize,
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f64,
    /// Weight of the new batch statistic in the running average (PyTorch: 0.1).
    pub momentum: f64,
}

impl BatchNorm2dConfig {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    pub fn new(num_features: usize) -> Self {
        Self { num_features, eps: 1e-5, momentum: 0.1 }
    }

    /// Weight 1, bias 0, running mean 0, running var 1, as PyTorch initialises them.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm2d<B> {
        let c = self.num_features;
        BatchNorm2d {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            num_batches_tracked: RunningState::new(Tensor::zeros([1], device)),
            num_features: c,
            eps: self.eps,
            momentum: self.momentum,
        }
    }
}

/// `torch.nn.BatchNorm2d`, exactly: weight, bias, running_mean, running_var and
/// num_batches_tracked; the running variance is updated with the *unbiased* batch variance.
///
/// burn's own `BatchNorm` uses the biased variance, has no `num_batches_tracked`, and
/// broadcasts `[1, C, 1, 1]` over `[N, C, H, W]`, which burn 0.21's flex backend walks one
/// element at a time. This layer works on an `[N·C, H·W]` view with one scale and shift per
/// row instead, a pattern flex runs with SIMD.
///
/// `num_batches_tracked` is kept as an f32 `[1]` tensor (burn has neither 0-d nor integer
/// running states); the weights I/O layer converts it to PyTorch's int64 scalar. f32 counts
/// exactly up to 2^24 batches.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// γ, `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// β, `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean, `[C]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, `[C]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Number of training batches seen, `[1]`.
    pub num_batches_tracked: RunningState<Tensor<B, 1>>,
    num_features: usize,
    eps: f64,
    momentum: f64,
}

impl<B: Backend> TypedLayer for BatchNorm2d<B> {
    fn in_channels(&self) -> usize {
        self.num_features
    }
    fn out_channels(&self) -> usize {
        self.num_features
    }
}

impl<B: Backend> BatchNorm2d<B> {
    fn describe(&self) -> String {
        format!("BatchNorm2d({})", self.num_features)
    }

    /// Epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises `[N, C, H, W]`: with batch statistics (and a running-stat update) when the
    /// backend records gradients, with the running statistics otherwise.
    ///
    /// A half-precision input (a bf16 compute view) is normalised in the dtype of the
    /// parameters (f32), as autocast runs BN, and returned in its own dtype.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        or_panic(check_channels(&|| self.describe(), x.dims(), self.num_features));
        let params = self.weight.val().dtype();
        crate::precision::promoted(x, params, |x| {
            if B::ad_enabled(&x.device()) {
                self.forward_train(x)
            } else {
                let (scale, shift) = self.folded();
                affine_rows(x, scale, shift)
            }
        })
    }

    /// The eval-mode BN as `y = x·scale + shift`, per channel: `scale = γ/√(var+eps)`,
    /// `shift = β − mean·scale`.
    pub fn folded(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let scale = self.weight.val().div(self.running_var.value().add_scalar(self.eps).sqrt());
        let shift = self.bias.val().sub(self.running_mean.value().mul(scale.clone()));
        (scale, shift)
    }

    /// [`forward`](Self::forward) followed by SiLU (timm's `ConvNormAct`): the same values, with
    /// the activation fused into the training-mode BN on burn-flex f32 (`fast::batch_norm_train`),
    /// BN then `fast::silu` elsewhere.
    pub fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if B::ad_enabled(&x.device()) && x.dtype() == self.weight.val().dtype() {
            or_panic(check_channels(&|| self.describe(), x.dims(), self.num_features));
            self.train_step(x, true)
        } else {
            crate::fast::silu(self.forward(x))
        }
    }

    fn forward_train(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.train_step(x, false)
    }

    /// Training mode: batch statistics, the running statistics updated; SiLU after with `silu`.
    fn train_step(&self, x: Tensor<B, 4>, silu: bool) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let count = n * h * w;
        assert!(
            count > 1,
            "{}: training needs more than one value per channel, got input shape {:?}",
            self.describe(),
            [n, c, h, w]
        );
        // Fused on burn-flex; burn's tensor ops (the reference) elsewhere.
        let (y, mean, var) = match crate::fast::batch_norm_train(x, self.weight.val(), self.bias.val(), self.eps, silu)
        {
            Ok(out) => (out.y, out.mean, out.var),
            Err((x, gamma, beta)) => {
                let (y, mean, var) = self.forward_train_generic(x, gamma, beta);
                (if silu { crate::fast::silu(y) } else { y }, mean, var)
            }
        };
        let m = self.momentum;
        let unbiased = var.clone().detach().mul_scalar(count as f64 / (count - 1) as f64);
        let rm = self.running_mean.value_sync().mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m));
        let rv = self.running_var.value_sync().mul_scalar(1.0 - m).add(unbiased.mul_scalar(m));
        self.running_mean.update(rm);
        self.running_var.update(rv);
        self.num_batches_tracked.update(self.num_batches_tracked.value_sync().add_scalar(1.0));

        y
    }

    /// Training-mode BN in burn's tensor ops: the output, the batch mean and the biased
    /// variance per channel.
    pub fn forward_train_generic(
        &self,
        x: Tensor<B, 4>,
        gamma: Tensor<B, 1>,
        beta: Tensor<B, 1>,
    ) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
        let [n, c, h, w] = x.dims();
        let count = n * h * w;
        let rows = x.reshape([n * c, h * w]);
        // Per-channel mean and biased variance over (N, H, W).
        let mean = rows.clone().sum_dim(1).reshape([n, c]).sum_dim(0).reshape([c]).div_scalar(count as f64);
        let centered = rows.sub(per_row(mean.clone(), n));
        let var = centered.clone().square().sum_dim(1).reshape([n, c]).sum_dim(0).reshape([c]).div_scalar(count as f64);
        let scale = gamma.div(var.clone().add_scalar(self.eps).sqrt());
        let y = centered.mul(per_row(scale, n)).add(per_row(beta, n));
        (y.reshape([n, c, h, w]), mean, var)
    }
}

/// `[C]` → `[N·C, 1]`, repeating the per-channel values once per sample.
fn per_row<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 2> {
    let c = v.dims()[0];
    v.reshape([1, c]).repeat_dim(0, n).reshape([n * c, 1])
}

/// `x·scale + shift` per channel, on an `[N·C, H·W]` view.
pub(crate) fn affine_rows<B: Backend>(x: Tensor<B, 4>, scale: Tensor<B, 1>, shift: Tensor<B, 1>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n * c, h * w]).mul(per_row(scale, n)).add(per_row(shift, n)).reshape([n, c, h, w])
}

/// Configuration of [`LayerNorm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub dim: usize,
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f64,
}

impl LayerNormConfig {
    /// eps 1e-5, as `torch.nn.LayerNorm`.
    pub fn new(dim: usize) -> Self {
        Self { dim, eps: 1e-5 }
    }

    /// Weight 1, bias 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([self.dim], device)),
            bias: Param::from_tensor(Tensor::zeros([self.dim], device)),
            dim: self.dim,
            eps: self.eps,
        }
    }
}

/// `torch.nn.LayerNorm` over the last dimension, with PyTorch's names (`weight`, `bias`; burn's
/// own calls them `gamma` and `beta`).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// γ, `[dim]`.
    pub weight: Param<Tensor<B, 1>>,
    /// β, `[dim]`.
    pub bias: Param<Tensor<B, 1>>,
    dim: usize,
    eps: f64,
}

impl<B: Backend> TypedLayer for LayerNorm<B> {
    fn in_channels(&self) -> usize {
        self.dim
    }
    fn out_channels(&self) -> usize {
        self.dim
    }
}

impl<B: Backend> LayerNorm<B> {
    /// Added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises the last dimension of `[.., dim]`.
    /// A half-precision input is normalised in the parameters' dtype (f32), as autocast runs
    /// LayerNorm, and returned in its own dtype.
    /// Fused on burn-flex f32 (`fast::layer_norm`), [`forward_generic`](Self::forward_generic)
    /// elsewhere.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        or_panic(check_last_dim(&|| format!("LayerNorm({})", self.dim), x.dims(), self.dim));
        match crate::fast::layer_norm(x, self.weight.val(), self.bias.val(), self.eps) {
            Ok(y) => y,
            Err((x, weight, bias)) => self.generic(x, weight, bias),
        }
    }

    /// The forward in burn's tensor ops: the path of every backend but flex, and the fused
    /// kernel's reference in tests.
    pub fn forward_generic<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        or_panic(check_last_dim(&|| format!("LayerNorm({})", self.dim), x.dims(), self.dim));
        self.generic(x, self.weight.val(), self.bias.val())
    }

    fn generic<const D: usize>(&self, x: Tensor<B, D>, weight: Tensor<B, 1>, bias: Tensor<B, 1>) -> Tensor<B, D> {
        crate::precision::promoted(x, weight.dtype(), |x| {
            let (var, mean) = x.clone().var_mean_bias(D - 1);
            let y = x.sub(mean).div(var.add_scalar(self.eps).sqrt());
            y.mul(weight.unsqueeze()).add(bias.unsqueeze())
        })
    }
}
