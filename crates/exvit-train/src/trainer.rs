//! The training step and evaluation.
//!
//! A step takes one or more micro-batches (gradient accumulation, or simulated data-parallel
//! replicas: the same thing on one device), each weighted by its share of the step's images,
//! so that the summed gradient is the gradient of the mean loss over all of them. Then a guard
//! checks the loss and the gradient norm are finite (else the step is refused and the model
//! stays as it was), AdamW updates the model at the schedule's LR, and the EMA follows.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use exvit_data::loader::Batch;
use exvit_zoo::{flat_grads, MobileVit};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::adamw::{AdamW, AdamWConfig, GradBuffer};
use crate::ema::Ema;
use crate::metrics::label_ranks;
use crate::precision::{compute_input, compute_view, loss_input, Precision};
use crate::schedule::CosineWarmup;
use exvit_layers::fast::on_pool;

/// A model that maps images to class scores (`Sync`: its forward runs on rayon's pool).
pub trait Classifier<B: Backend>: Module<B> + Sync {
    /// `[n, 3, h, w]` images to `[n, classes]` logits.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}

impl<B: Backend> Classifier<B> for MobileVit<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

/// Why a step was refused.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A step with no images.
    #[error("iteration {iteration}: a step needs at least one image")]
    EmptyStep {
        /// The iteration.
        iteration: u64,
    },
    /// The data-parallel gradient average failed (another replica failed or stalled).
    #[error("iteration {iteration}: gradient all-reduce: {message}")]
    Reduce {
        /// The iteration.
        iteration: u64,
        /// Why.
        message: String,
    },
    /// The loss or the gradient is NaN or infinite.
    #[error("iteration {iteration}: the {what} is {value} (not finite); the step was not applied and the model is the last good one")]
    NonFinite {
        /// The iteration.
        iteration: u64,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value.
        value: f64,
    },
}

/// The recipe of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The LR schedule.
    pub schedule: CosineWarmup,
    /// AdamW.
    pub adamw: AdamWConfig,
    /// Label smoothing (0.1).
    pub label_smoothing: f64,
    /// EMA momentum (0.0005), or none.
    pub ema_momentum: Option<f64>,
    /// The dtype the steps compute in (f32 unless set; bf16 keeps f32 master weights).
    #[serde(default)]
    pub precision: Precision,
}

impl TrainConfig {
    /// ml-cvnets' MobileViT recipe over `epochs` epochs.
    pub fn cvnets(epochs: u64) -> Self {
        TrainConfig {
            schedule: CosineWarmup::cvnets(epochs),
            adamw: AdamWConfig::default(),
            label_smoothing: 0.1,
            ema_momentum: Some(0.0005),
            precision: Precision::F32,
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The iteration (0-based) this step was.
    pub iteration: u64,
    /// Mean loss over the step's images.
    pub loss: f64,
    /// The LR used.
    pub lr: f64,
    /// Images in the step.
    pub images: usize,
    /// Side of the step's images (all its micro-batches share it).
    pub resolution: usize,
    /// L2 norm of the (summed) gradient.
    pub grad_norm: f64,
}

/// Replaces one step's gradients and mean loss by their average over data-parallel replicas
/// (`crate::replicas`); an `Err` names why it could not.
pub type GradReduce<B> = Box<dyn FnMut(GradBuffer<B>, f64) -> Result<(GradBuffer<B>, f64), String> + Send>;

/// The model, its optimiser and its EMA.
pub struct Trainer<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>> {
    /// The model being trained.
    pub model: M,
    /// The optimiser (state keyed by parameter path).
    pub optim: AdamW<B::InnerBackend>,
    /// The EMA, when the recipe has one.
    pub ema: Option<Ema<M::InnerModule>>,
    /// The recipe.
    pub cfg: TrainConfig,
    /// Steps taken (the global iteration).
    pub iteration: u64,
    /// Applied to the model after every optimiser step (which rebuilds the parameters): the
    /// data-parallel replicas mark their new parameters for gradient all-reduce here.
    pub after_update: Option<fn(M) -> M>,
    /// Applied to the gradients and the loss between backward and the optimiser step: the
    /// data-parallel replicas on threads average them here (so every replica also takes the
    /// same decision on a non-finite loss or gradient).
    pub reduce: Option<GradReduce<B::InnerBackend>>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>> Trainer<B, M>
where
    M::InnerModule: Module<B::InnerBackend>,
{
    /// Starts training `model`.
    pub fn new(model: M, cfg: TrainConfig) -> Self {
        let optim = AdamW::new::<B, M>(cfg.adamw, &model);
        let ema = cfg.ema_momentum.map(|m| Ema::new(&model, m));
        Trainer { model, optim, ema, cfg, iteration: 0, after_update: None, reduce: None }
    }

    /// Forward and backward over the micro-batches, summing gradients weighted by each
    /// micro-batch's share of the images. Returns the gradients, the mean loss and the image
    /// count. The model is not changed.
    pub fn gradients(&self, micro: &[(Tensor<B, 4>, Tensor<B, 1, Int>)]) -> (GradBuffer<B::InnerBackend>, f64, usize) {
        let total: usize = micro.iter().map(|(x, _)| x.dims()[0]).sum();
        let device = micro.first().map(|(x, _)| x.device());
        let loss_fn = CrossEntropyLossConfig::new()
            .with_smoothing((self.cfg.label_smoothing > 0.0).then_some(self.cfg.label_smoothing as f32))
            .init(&device.unwrap_or_default());
        let mut sum = GradBuffer::new();
        let mut loss_sum = 0.0;
        // Under bf16, a view computing in bf16 whose gradients land on the f32 master weights.
        let precision = self.cfg.precision;
        let view = compute_view(&self.model, precision);
        for (x, y) in micro {
            let n = x.dims()[0];
            let share = n as f64 / total as f64;
            // Not on `fast::on_pool`: with autodiff running on another thread too, a pool thread
            // waiting inside one backward (which holds burn's graph lock) may steal this whole
            // pass, which then waits on that lock beneath it on the same stack.
            let logits = loss_input(view.logits(compute_input(x.clone(), precision)));
            let loss = loss_fn.forward(logits, y.clone());
            loss_sum += loss.clone().into_scalar().elem::<f64>() * share;
            let grads = loss.mul_scalar(share).backward();
            for (key, g) in flat_grads(&self.model, &grads) {
                match sum.remove(&key) {
                    Some(acc) => sum.insert(key, acc + g),
                    None => sum.insert(key, g),
                };
            }
        }
        (sum, loss_sum, total)
    }

    /// One optimiser step over `micro` (one or more micro-batches) during `epoch`.
    pub fn step(&mut self, micro: &[(Tensor<B, 4>, Tensor<B, 1, Int>)], epoch: u64) -> Result<StepStats, TrainError> {
        let iteration = self.iteration;
        let (grads, loss, images) = self.gradients(micro);
        if images == 0 {
            return Err(TrainError::EmptyStep { iteration });
        }
        let (grads, loss) = match &mut self.reduce {
            Some(reduce) => reduce(grads, loss).map_err(|message| TrainError::Reduce { iteration, message })?,
            None => (grads, loss),
        };
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { iteration, what: "loss", value: loss });
        }
        let grad_norm =
            grads.values().map(|g| g.clone().powi_scalar(2).sum().into_scalar().elem::<f64>()).sum::<f64>().sqrt();
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { iteration, what: "gradient norm", value: grad_norm });
        }
        let resolution = micro[0].0.dims()[2];
        let lr = self.cfg.schedule.lr(iteration, epoch);
        self.model = self.optim.step::<B, M>(self.model.clone(), &grads, lr);
        if let Some(f) = self.after_update {
            self.model = f(self.model.clone());
        }
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model);
        }
        self.iteration += 1;
        Ok(StepStats { iteration, loss, lr, images, resolution, grad_norm })
    }
}

/// Accuracy and loss over an evaluation set.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EvalStats {
    /// Images.
    pub images: usize,
    /// Top-1 accuracy, in percent.
    pub top1: f64,
    /// Top-5 accuracy, in percent.
    pub top5: f64,
    /// Mean cross entropy (no smoothing).
    pub loss: f64,
}

/// Evaluates `model` (in eval mode: a non-autodiff backend) on `batches` of images and labels.
pub fn evaluate<B: Backend, M: Classifier<B>>(
    model: &M,
    batches: impl IntoIterator<Item = (Tensor<B, 4>, Vec<usize>)>,
) -> EvalStats {
    evaluate_ranked(model, batches).0
}

/// [`evaluate`], and the rank of each image's label (0 = correct at top-1), in batch order: the
/// per-image record that paired comparisons of two models need.
pub fn evaluate_ranked<B: Backend, M: Classifier<B>>(
    model: &M,
    batches: impl IntoIterator<Item = (Tensor<B, 4>, Vec<usize>)>,
) -> (EvalStats, Vec<u32>) {
    let (mut n, mut loss) = (0usize, 0.0f64);
    let mut ranks = Vec::new();
    for (x, labels) in batches {
        let device = x.device();
        let logits = on_pool(|| model.logits(x));
        let y = Tensor::<B, 1, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| l as i64).collect(), [labels.len()]),
            &device,
        );
        let l: f64 = CrossEntropyLossConfig::new().init(&device).forward(logits.clone(), y).into_scalar().elem();
        ranks.extend(label_ranks(logits, &labels));
        loss += l * labels.len() as f64;
        n += labels.len();
    }
    let pct = |k: u32| {
        if n == 0 {
            0.0
        } else {
            100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / n as f64
        }
    };
    let stats = EvalStats { images: n, top1: pct(1), top5: pct(5), loss: if n == 0 { 0.0 } else { loss / n as f64 } };
    (stats, ranks)
}

/// A loader batch as tensors on `device`: images `[n, 3, s, s]` and labels.
pub fn batch_tensors<B: Backend>(batch: Batch, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>, Vec<usize>) {
    let n = batch.len();
    let s = batch.size;
    let images = Tensor::from_data(TensorData::new(batch.images, [n, 3, s, s]), device);
    let labels = Tensor::from_data(TensorData::new(batch.labels.iter().map(|&l| l as i64).collect(), [n]), device);
    (images, labels, batch.labels)
}
