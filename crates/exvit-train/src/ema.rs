//! An exponential moving average of the whole model state, running statistics included, as
//! ml-cvnets keeps it: `ema ← (1 − m) · ema + m · model` after every iteration (m = 0.0005).
//! `num_batches_tracked` is copied, not averaged (cvnets averages floating tensors only, and
//! PyTorch's is an integer).

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_zoo::{flat_tensors, map_flat};

/// The EMA model (on the inner, non-autodiff backend: it is only evaluated).
#[derive(Debug, Clone)]
pub struct Ema<M> {
    /// The averaged model.
    pub model: M,
    /// Momentum m (0.0005).
    pub momentum: f64,
    /// Updates so far.
    pub updates: u64,
}

impl<M> Ema<M> {
    /// Starts from a copy of `model`'s current state.
    pub fn new<B: AutodiffBackend, T: AutodiffModule<B, InnerModule = M>>(model: &T, momentum: f64) -> Self {
        Ema { model: model.valid(), momentum, updates: 0 }
    }

    /// One update from the current training model.
    pub fn update<B: AutodiffBackend, T: AutodiffModule<B, InnerModule = M>>(&mut self, model: &T)
    where
        M: Module<B::InnerBackend>,
    {
        let src: BTreeMap<String, Tensor<B::InnerBackend, 1>> = flat_tensors(&model.valid()).into_iter().collect();
        let m = self.momentum;
        let ema = self.model.clone();
        self.model = map_flat(ema, |key, e: Tensor<B::InnerBackend, 1>| {
            let s = src.get(key)?.clone();
            Some(if key.ends_with("num_batches_tracked") { s } else { e.mul_scalar(1.0 - m) + s.mul_scalar(m) })
        });
        self.updates += 1;
    }
}
