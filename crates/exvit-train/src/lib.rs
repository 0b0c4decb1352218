//! exvit's training engine, exact to ml-cvnets' recipe: cross entropy with label smoothing,
//! AdamW written out and keyed by parameter path (`adamw`), cvnets' warmup + cosine schedule
//! (`schedule`), an EMA of the whole state (`ema`), top-k accuracy (`metrics`), and the step
//! with gradient accumulation / simulated data-parallel replicas and a NaN/Inf guard
//! (`trainer`); data-parallel replicas on threads (`replicas`) or NCCL (`ddp`), and the guards
//! against silent failures (`guard`). `train_step` (burn's AdamW) remains for the speed
//! benchmarks.

pub mod adamw;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "ddp")]
pub mod ddp;
pub mod ema;
pub mod fit;
pub mod guard;
pub mod metrics;
pub mod precision;
pub mod replicas;
pub mod run;
pub mod schedule;
pub mod trainer;
pub mod writer;

pub use adamw::{AdamW as ExAdamW, AdamWConfig as ExAdamWConfig, GradBuffer};
pub use checkpoint::{load_checkpoint, save_checkpoint, CheckpointError, Position};
pub use ema::Ema;
pub use fit::{fit, FitError, FitPlan, Sampling};
pub use metrics::{label_ranks, topk_correct};
pub use precision::Precision;
pub use schedule::CosineWarmup;
pub use trainer::{
    batch_tensors, evaluate, evaluate_ranked, Classifier, EvalStats, StepStats, TrainConfig, TrainError, Trainer,
};

use burn::module::AutodiffModule;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_zoo::MobileVit;

/// Cross entropy with label smoothing 0.1 (ml-cvnets' recipe), as PyTorch's
/// `F.cross_entropy(logits, y, label_smoothing=0.1)`.
pub fn smoothed_cross_entropy<B: Backend>(device: &B::Device) -> CrossEntropyLoss<B> {
    CrossEntropyLossConfig::new().with_smoothing(Some(0.1)).init(device)
}

/// AdamW with PyTorch's defaults, set explicitly (burn's differ: eps 1e-5, weight decay 1e-4):
/// β = (0.9, 0.999), eps 1e-8, weight decay 0.01.
pub fn adamw_pytorch() -> AdamWConfig {
    AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.01)
}

/// The optimiser type for a model on backend `B`.
pub type ModelOptimizer<B> = OptimizerAdaptor<AdamW, MobileVit<B>, B>;

/// One training step: forward (train mode) in `precision` (bf16: a compute view of the f32
/// model, see [`precision`]), smoothed cross entropy, backward, AdamW at `lr`. Returns the
/// updated model and the loss.
pub fn train_step<B: AutodiffBackend>(
    model: MobileVit<B>,
    optim: &mut ModelOptimizer<B>,
    loss_fn: &CrossEntropyLoss<B>,
    images: Tensor<B, 4>,
    labels: Tensor<B, 1, Int>,
    lr: f64,
    precision: Precision,
) -> (MobileVit<B>, f32)
where
    MobileVit<B>: AutodiffModule<B>,
{
    let view = precision::compute_view(&model, precision);
    let logits = precision::loss_input(view.forward(precision::compute_input(images, precision)));
    let loss = loss_fn.forward(logits, labels);
    let value: f32 = loss.clone().into_scalar().elem();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}
