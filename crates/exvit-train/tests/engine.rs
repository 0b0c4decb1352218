//! The training engine: AdamW against PyTorch, the EMA and top-k by hand, gradient
//! accumulation = simulated data-parallel replicas = one big batch (without BN), and the
//! documented difference with BN in train mode, the NaN/Inf guard, and a short multi-scale run
//! through the real loader that learns.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use burn_flex::{Flex, FlexDevice};
use exvit_layers::linear::{Linear, LinearConfig};
use exvit_layers::norm::{LayerNorm, LayerNormConfig};
use exvit_train::{
    batch_tensors, evaluate, topk_correct, Classifier, Ema, ExAdamW, ExAdamWConfig, GradBuffer, TrainConfig,
    TrainError, Trainer,
};
use exvit_zoo::flat_tensors;

mod common;
use common::{repo, tiny_mobilevit};
use safetensors::SafeTensors;

type AD = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;

/// A model without BN: global average pool, LayerNorm, linear classifier.
#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    norm: LayerNorm<B>,
    fc: Linear<B>,
}

impl<B: Backend> Tiny<B> {
    fn new(classes: usize, device: &B::Device) -> Self {
        Tiny { norm: LayerNormConfig::new(3).init(device), fc: LinearConfig::new(3, classes).init(device) }
    }
}

impl<B: Backend> Classifier<B> for Tiny<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(self.norm.forward(pooled))
    }
}

fn values(t: Tensor<impl Backend, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn state<B: Backend, M: Module<B>>(m: &M) -> Vec<(String, Vec<f32>)> {
    flat_tensors(m).into_iter().map(|(k, t)| (k, values(t))).collect()
}

#[test]
fn adamw_matches_pytorch_with_and_without_decay_on_norms_and_biases() {
    let bytes = std::fs::read(repo().join("tests/fixtures/train/adamw.safetensors")).unwrap();
    let fx = SafeTensors::deserialize(&bytes).unwrap();
    let get = |k: &str| -> Vec<f32> {
        fx.tensor(k).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let lrs: Vec<f64> =
        fx.tensor("lrs").unwrap().data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
    for (mode, decay_all) in [("all", true), ("timm", false)] {
        let mut model = Tiny::<AD>::new(4, &DEV);
        model = exvit_zoo::map_flat(model, |k, t: Tensor<AD, 1>| {
            Some(Tensor::from_data(TensorData::new(get(&format!("init.{k}")), t.dims()), &DEV))
        });
        let cfg = ExAdamWConfig { decay_norm_and_bias: decay_all, ..ExAdamWConfig::default() };
        let mut opt = ExAdamW::<Flex>::new::<AD, _>(cfg, &model);
        for (s, &lr) in lrs.iter().enumerate() {
            let grads: GradBuffer<Flex> = ["fc.weight", "fc.bias", "norm.weight", "norm.bias"]
                .iter()
                .map(|k| {
                    let g = get(&format!("grad{s}.{k}"));
                    let n = g.len();
                    (k.to_string(), Tensor::<Flex, 1>::from_data(TensorData::new(g, [n]), &DEV))
                })
                .collect();
            model = opt.step::<AD, _>(model, &grads, lr);
        }
        for (k, got) in state(&model) {
            let want = get(&format!("{mode}.{k}"));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "{mode} {k}: differs from torch.optim.AdamW by {worst:e}");
        }
    }
}

#[test]
fn ema_follows_the_model_by_hand() {
    let model = Tiny::<AD>::new(2, &DEV);
    let mut ema = Ema::new(&model, 0.25);
    let before = state(&ema.model);
    // Move the model: every tensor + 1.
    let moved = exvit_zoo::map_flat(model, |_, t: Tensor<AD, 1>| Some(Tensor::from_inner(t.inner().add_scalar(1.0))));
    ema.update(&moved);
    for ((k, e), (_, b)) in state(&ema.model).into_iter().zip(before) {
        for (x, y) in e.iter().zip(&b) {
            // (1 − 0.25)·b + 0.25·(b + 1) = b + 0.25
            assert!((x - (y + 0.25)).abs() < 1e-6, "{k}: {x} vs {}", y + 0.25);
        }
    }
    assert_eq!(ema.updates, 1);
}

#[test]
fn topk_by_hand() {
    let logits = Tensor::<Flex, 2>::from_data(
        TensorData::new(
            vec![0.1f32, 0.9, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7, /* row 2 */ 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0],
            [2, 8],
        ),
        &DEV,
    );
    // Row 0: label 1 is top-1; row 1: label 6 ranks 7th (top-5 miss).
    assert_eq!(topk_correct(logits.clone(), &[1, 6]), (1, 1));
    // Row 0 label 4 (0.5) ranks 4th: top-5 hit, top-1 miss; row 1 label 0: both.
    assert_eq!(topk_correct(logits, &[4, 0]), (1, 2));
}

fn random_batch<B: Backend>(n: usize, seed: u64, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    B::seed(device, seed);
    let x = Tensor::<B, 4>::random([n, 3, 8, 8], Distribution::Uniform(0.0, 1.0), device);
    let y =
        Tensor::<B, 1, Int>::from_data(TensorData::new((0..n as i64).map(|i| i % 3).collect::<Vec<_>>(), [n]), device);
    (x, y)
}

fn split(x: &Tensor<AD, 4>, y: &Tensor<AD, 1, Int>, parts: usize) -> Vec<(Tensor<AD, 4>, Tensor<AD, 1, Int>)> {
    let n = x.dims()[0] / parts;
    (0..parts).map(|i| (x.clone().narrow(0, i * n, n), y.clone().narrow(0, i * n, n))).collect()
}

/// Data parallel = averaging the replicas' gradients = accumulation over equal micro-batches.
/// Without BN, 4 replicas of 4 images give the update of one device on the 16 images.
#[test]
fn replicas_equal_one_device_without_batch_norm() {
    let (x, y) = random_batch::<AD>(16, 1, &DEV);
    let cfg = TrainConfig { ema_momentum: None, ..TrainConfig::cvnets(1) };
    let base = Tiny::<AD>::new(3, &DEV);
    let mut one = Trainer::new(base.clone(), cfg);
    let mut four = Trainer::new(base, cfg);
    let a = one.step(&[(x.clone(), y.clone())], 0).unwrap();
    let b = four.step(&split(&x, &y, 4), 0).unwrap();
    assert!((a.loss - b.loss).abs() < 1e-6 && (a.grad_norm - b.grad_norm).abs() < 1e-6 * a.grad_norm);
    for ((k, p), (_, q)) in state(&one.model).into_iter().zip(state(&four.model)) {
        let worst = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "{k}: replicas differ from one device by {worst:e}");
    }
}

/// The same on real threads: 2 replicas at batch 8 each, averaging through the thread
/// all-reduce (`exvit train --replicas 2`), equal one device at batch 16 after 5 steps (≤1e-5),
/// the replicas identical bit for bit after every step.
#[test]
fn thread_replicas_at_half_batch_equal_one_device_without_batch_norm() {
    use exvit_train::replicas::{reduce_hook, Faults, ThreadAllReduce};
    let cfg = TrainConfig { ema_momentum: None, ..TrainConfig::cvnets(1) };
    let base = Tiny::<AD>::new(3, &DEV);
    let batches: Vec<_> = (0..5).map(|s| random_batch::<AD>(16, 10 + s, &DEV)).collect();
    let mut one = Trainer::new(base.clone(), cfg);
    let expected: Vec<_> = batches
        .iter()
        .map(|(x, y)| {
            one.step(&[(x.clone(), y.clone())], 0).unwrap();
            state(&one.model)
        })
        .collect();
    let reducer = Arc::new(ThreadAllReduce::new(2));
    let halves: Vec<Vec<_>> =
        (0..2).map(|r| batches.iter().map(|(x, y)| split(x, y, 2)[r].clone()).collect()).collect();
    let runs: Vec<_> = halves
        .into_iter()
        .enumerate()
        .map(|(rank, mine)| {
            let (reducer, base) = (reducer.clone(), base.clone());
            std::thread::spawn(move || {
                // Own autodiff leaves (burn's graph locks deadlock across threads that share them).
                let mut t = Trainer::new(base.fork(&DEV), cfg);
                t.reduce = Some(reduce_hook(reducer, rank, Faults::default()));
                mine.into_iter()
                    .map(|b| {
                        t.step(&[b], 0).unwrap();
                        state(&t.model)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let runs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    for (step, want) in expected.iter().enumerate() {
        assert_eq!(runs[0][step], runs[1][step], "step {step}: the replicas differ");
        for ((k, p), (_, q)) in want.iter().zip(&runs[0][step]) {
            let worst = p.iter().zip(q).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5, "step {step}, {k}: 2 replicas differ from one device by {worst:e}");
        }
    }
}

/// With BN in train mode each replica normalises with its own batch statistics, so N replicas
/// do NOT give one device's update (PyTorch DDP without SyncBatchNorm behaves the same way).
#[test]
fn replicas_differ_from_one_device_with_batch_norm_in_train_mode() {
    let (x, y) = random_batch::<AD>(8, 2, &DEV);
    let x = x.mul_scalar(4.0); // spread the batch statistics
    let cfg = TrainConfig { ema_momentum: None, ..TrainConfig::cvnets(1) };
    let base = tiny_mobilevit().init::<AD>(&DEV);
    let one = Trainer::new(base.clone(), cfg);
    let two = Trainer::new(base, cfg);
    let (g1, _, _) = one.gradients(&[(x.clone(), y.clone())]);
    let (g2, _, _) = two.gradients(&split(&x, &y, 2));
    let (mut diff, mut norm) = (0f64, 0f64);
    for (k, a) in &g1 {
        let (a, b) = (values(a.clone()), values(g2[k].clone()));
        diff += a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
        norm += a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
    }
    let rel = (diff / norm).sqrt();
    assert!(rel > 1e-3, "with BN in train mode the replicas' gradient should differ (relative {rel:e})");
}

#[test]
fn a_non_finite_loss_is_refused_and_the_model_kept() {
    let cfg = TrainConfig::cvnets(1);
    let mut t = Trainer::new(Tiny::<AD>::new(3, &DEV), cfg);
    let before = state(&t.model);
    let (x, y) = random_batch::<AD>(4, 3, &DEV);
    let bad = x.clone().mul_scalar(f32::NAN);
    let e = t.step(&[(bad, y.clone())], 0).unwrap_err();
    assert!(matches!(e, TrainError::NonFinite { iteration: 0, what: "loss", .. }), "{e}");
    assert!(e.to_string().contains("last good"), "{e}");
    assert_eq!(state(&t.model), before, "the model must be unchanged");
    assert_eq!(t.iteration, 0);
    t.step(&[(x, y)], 0).unwrap();
    assert_eq!(t.iteration, 1);
}

/// End to end on the real loader: a 3-class dataset (red, green or blue tinted noise), the
/// multi-scale sampler (sizes 24/32, v0.2 batches) with 2 micro-batches per step, the cvnets
/// recipe with a short warmup. The tiny MobileViT learns it (train loss falls, the model and
/// its EMA are evaluated).
#[test]
fn a_short_multi_scale_run_through_the_loader_learns() {
    use exvit_data::loader::{Loader, LoaderConfig};
    use exvit_data::sampler::{Fixed, MultiScale, Replica, ScaleRule};
    use exvit_data::transform::{EvalTransform, TrainTransform, Transform};
    let root = common::tinted_dataset("engine", 16);
    let ds = Arc::new(exvit_data::open_split(&root).unwrap());
    let ms = MultiScale { sizes: vec![24, 32], ref_size: 32, base: 4, rule: ScaleRule::V02, n_gpus: 1 };
    const EPOCHS: u64 = 8;
    let mut cfg = TrainConfig::cvnets(EPOCHS);
    cfg.schedule.warmup_iters = 4;
    cfg.schedule.warmup_init_lr = 1e-3;
    cfg.schedule.max_lr = 5e-3;
    cfg.ema_momentum = Some(0.1);
    let mut trainer = Trainer::new(tiny_mobilevit().init::<AD>(&DEV), cfg);
    let mut losses = Vec::new();
    for epoch in 0..EPOCHS {
        let steps = ms.steps(ds.samples.len(), 0, epoch, Replica::default(), 2);
        let plans: Vec<_> = steps.iter().flat_map(|s| s.micro.clone()).collect();
        let loader_cfg = LoaderConfig::new(Transform::Train(TrainTransform::new(32)), 0);
        let mut loader = Loader::start(ds.clone(), plans, epoch, 0, loader_cfg).unwrap();
        for s in &steps {
            let micro: Vec<_> = (0..s.micro.len())
                .map(|_| {
                    let (x, y, _) = batch_tensors::<AD>(loader.next().unwrap().unwrap(), &DEV);
                    (x, y)
                })
                .collect();
            assert!(micro.iter().all(|(x, _)| x.dims()[2] == s.micro[0].size), "one resolution per step");
            let st = trainer.step(&micro, epoch).unwrap();
            assert_eq!(st.resolution, s.micro[0].size, "the step reports its resolution");
            losses.push(st.loss);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[losses.len() - 5..]));
    assert!(
        last < 0.85 * first,
        "mean train loss of the first 5 steps {first}, of the last 5 {last}: the model did not learn"
    );
    let eval_cfg = LoaderConfig::new(
        Transform::Eval(EvalTransform { resize: 36, crop: 32, filter: exvit_data::resize::Filter::Bilinear }),
        0,
    );
    let eval_batches = |ds: &Arc<exvit_data::Dataset>| {
        let plan = Fixed::eval(16, 32).batches(ds.samples.len(), 0, 0, Replica::default());
        Loader::start(ds.clone(), plan, 0, 0, eval_cfg.clone()).unwrap().map(|b| {
            let (x, _, labels) = batch_tensors::<Flex>(b.unwrap(), &DEV);
            (x, labels)
        })
    };
    let model = evaluate(&trainer.model.valid(), eval_batches(&ds));
    let ema = evaluate(&trainer.ema.as_ref().unwrap().model, eval_batches(&ds));
    assert_eq!((model.images, ema.images), (48, 48));
    eprintln!("train loss {first:.3} -> {last:.3}; model {model:?}; EMA {ema:?}");
    assert!(model.top1 > 60.0, "model top-1 {:.1}% on its training set", model.top1);
    assert!(ema.top5 == 100.0 && ema.loss.is_finite(), "3 classes: top-5 is always 100%");
}
