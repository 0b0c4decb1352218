//! AdamW written out, keyed by parameter path (timm's `state_dict` keys), so that its state can
//! be saved and restored by name (burn's optimiser records are keyed by `ParamId`s, random in
//! each process) and so that norm and bias parameters can be left out of weight decay (burn 0.21
//! has no parameter groups). The update is PyTorch's single-tensor `torch.optim.AdamW`, operation
//! for operation (tested against a PyTorch fixture).

use std::collections::{BTreeMap, HashSet};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_zoo::{map_flat, named_tensors, TensorKind};
use serde::{Deserialize, Serialize};

/// AdamW's hyper-parameters (the LR comes from the schedule at each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁ (0.9).
    pub beta1: f64,
    /// β₂ (0.999).
    pub beta2: f64,
    /// ε (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0.01).
    pub weight_decay: f64,
    /// Decay every parameter (cvnets) or leave out 1-D ones and biases (timm's
    /// `no_weight_decay` rule: `ndim <= 1 or name.endswith(".bias")`).
    pub decay_norm_and_bias: bool,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults with cvnets' weight decay: β (0.9, 0.999), ε 1e-8, wd 0.01 on every
    /// parameter. (burn's own AdamW defaults differ: ε 1e-5, wd 1e-4.)
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay_norm_and_bias: true }
    }
}

/// Summed gradients by parameter key (on the inner, non-autodiff backend).
pub type GradBuffer<B> = BTreeMap<String, Tensor<B, 1>>;

/// Moment estimates of one parameter.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    /// First moment (`exp_avg`).
    pub m: Tensor<B, 1>,
    /// Second moment (`exp_avg_sq`).
    pub v: Tensor<B, 1>,
}

/// AdamW with its state.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken (PyTorch's `step`, shared by all parameters).
    pub step: u64,
    /// Moments by parameter key.
    pub state: BTreeMap<String, Moments<B>>,
    no_decay: HashSet<String>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimiser for `model` (the model gives the parameter shapes for the decay rule).
    pub fn new<B2: Backend, M: Module<B2>>(cfg: AdamWConfig, model: &M) -> Self {
        let no_decay = named_tensors::<B2, M>(model)
            .into_iter()
            .filter(|t| t.kind() == TensorKind::Param && (t.data.shape.len() <= 1 || t.key.ends_with(".bias")))
            .map(|t| t.key)
            .collect();
        AdamW { cfg, step: 0, state: BTreeMap::new(), no_decay }
    }

    /// Whether `key` is decayed.
    pub fn decays(&self, key: &str) -> bool {
        self.cfg.decay_norm_and_bias || !self.no_decay.contains(key)
    }

    /// The AdamW update of one parameter (call after incrementing [`AdamW::step`]).
    pub fn update(&mut self, key: &str, param: Tensor<B, 1>, grad: &Tensor<B, 1>, lr: f64) -> Tensor<B, 1> {
        let c = self.cfg;
        let t = self.step as i32;
        let decay = if self.decays(key) { c.weight_decay } else { 0.0 };
        let param = if decay != 0.0 { param.mul_scalar(1.0 - lr * decay) } else { param };
        let st =
            self.state.entry(key.to_string()).or_insert_with(|| Moments { m: grad.zeros_like(), v: grad.zeros_like() });
        // exp_avg.lerp_(grad, 1 - β₁): PyTorch's lerp for a weight below ½ is
        // `self + w · (end − self)`.
        let m = st.m.clone() + (grad.clone() - st.m.clone()).mul_scalar(1.0 - c.beta1);
        let v = st.v.clone().mul_scalar(c.beta2) + (grad.clone() * grad.clone()).mul_scalar(1.0 - c.beta2);
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let denom = v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(c.eps);
        let new = param - (m.clone() / denom).mul_scalar(step_size);
        st.m = m;
        st.v = v;
        new
    }
}

impl<IB: Backend> AdamW<IB> {
    /// One step on `model` (on an autodiff backend over `IB`) with the summed gradients
    /// `grads` at learning rate `lr`.
    pub fn step<B: AutodiffBackend<InnerBackend = IB>, M: AutodiffModule<B>>(
        &mut self,
        model: M,
        grads: &GradBuffer<IB>,
        lr: f64,
    ) -> M {
        self.step += 1;
        map_flat(model, |key, p: Tensor<B, 1>| {
            let g = grads.get(key)?;
            Some(Tensor::from_inner(self.update(key, p.inner(), g, lr)))
        })
    }
}
