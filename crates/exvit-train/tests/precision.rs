//! bf16 compute with f32 master weights (`exvit_train::precision`), checked on burn-flex, which
//! stores bf16 and rounds to it after every op: the compute view casts the convs and linears
//! (not the norms), its gradients reach the f32 parameters, and a bf16 step agrees with an f32
//! step to bf16's precision while the optimiser, the EMA and the BN running statistics stay f32.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, TensorData};
use burn_flex::{Flex, FlexDevice};
use exvit_train::precision::{cast_outside_norms, compute_view, loss_input};
use exvit_train::{Classifier, Precision, TrainConfig, Trainer};
use exvit_zoo::{flat_tensors, load_safetensors, resolve_model, LoadMode, MobileVit};

#[allow(dead_code)]
mod common;
use common::{repo, tiny_mobilevit};

type AD = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;

/// `(path, dtype)` of every float tensor of a module, parameters and running states.
struct Dtypes(Vec<String>, Vec<(String, DType)>);

impl<B: Backend> ModuleVisitor<B> for Dtypes {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.1.push((self.0.join("."), param.val().dtype()));
    }
}

fn dtypes<B: Backend, M: Module<B>>(m: &M) -> Vec<(String, DType)> {
    let mut v = Dtypes(Vec::new(), Vec::new());
    m.visit(&mut v);
    v.1
}

/// A deterministic batch (tests run in parallel and share burn's global RNG, so no seeding).
fn batch(seed: u64) -> (Tensor<AD, 4>, Tensor<AD, 1, Int>) {
    let n = 8 * 3 * 64 * 64;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let x = Tensor::<AD, 4>::from_data(TensorData::new(values, [8, 3, 64, 64]), &DEV);
    let y = Tensor::<AD, 1, Int>::from_data([0i64, 1, 2, 1, 2, 0, 1, 2], &DEV);
    (x, y)
}

/// The tiny MobileViT with timm's weights (a fixture): deterministic, unlike a random init
/// (tests run in parallel and share burn's global RNG). Each call is an independent copy.
fn timm_tiny() -> MobileVit<AD> {
    let cfg = resolve_model(repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(), 10).unwrap();
    let path = repo().join("tests/fixtures/parity/timm_tiny.safetensors");
    load_safetensors(cfg.init::<AD>(&DEV), &path, LoadMode::Strict).unwrap().0
}

fn flat<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.cast(DType::F32).into_data().to_vec().unwrap()
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn the_bf16_view_casts_convs_and_linears_but_not_norms_or_running_stats() {
    let model: MobileVit<AD> = tiny_mobilevit().init(&DEV);
    let view = compute_view(&model, Precision::Bf16);
    let all = dtypes(&view);
    let (mut bf16, mut f32) = (0, 0);
    for (path, dtype) in &all {
        let norm = path.contains(".bn") || path.contains("norm") || path.starts_with("bn");
        let running = path.contains("running") || path.contains("num_batches");
        let trainable_conv = !norm && !running;
        if trainable_conv {
            assert_eq!(*dtype, DType::BF16, "{path} should be bf16 in the compute view");
            bf16 += 1;
        } else {
            assert_eq!(*dtype, DType::F32, "{path} should stay f32 in the compute view");
            f32 += 1;
        }
    }
    assert!(bf16 > 10 && f32 > 10, "{bf16} bf16 and {f32} f32 tensors");
    // The master model is untouched, and the f32 "view" is the model itself.
    assert!(dtypes(&model).iter().all(|(_, d)| *d == DType::F32));
    assert!(dtypes(&compute_view(&model, Precision::F32)).iter().all(|(_, d)| *d == DType::F32));
}

#[test]
fn bf16_gradients_are_f32_on_the_master_weights_and_close_to_f32_ones() {
    let model = timm_tiny();
    let (x, y) = batch(1);
    let loss_fn = exvit_train::smoothed_cross_entropy::<AD>(&DEV);
    let grads_of = |dtype: FloatDType| {
        let view = cast_outside_norms(&model, dtype);
        let logits = loss_input(view.logits(x.clone().cast(dtype)));
        assert_eq!(logits.dtype(), DType::F32);
        let loss = loss_fn.forward(logits.clone(), y.clone());
        let value: f32 = loss.clone().into_scalar().elem();
        let grads = loss.backward();
        (value, flat(logits.inner().reshape([-1])), exvit_zoo::flat_grads(&model, &grads))
    };
    let (l32, z32, g32) = grads_of(FloatDType::F32);
    let (l16, z16, g16) = grads_of(FloatDType::BF16);
    // f16 has 3 more mantissa bits than bf16: if the differences are rounding (and not a
    // mistake in the casts), f16's are several times smaller.
    let (_, zh, _) = grads_of(FloatDType::F16);
    let dh = rel(&zh, &z32);
    // bf16 really computed (8 bits of mantissa): the logits moved, but not far.
    let dz = rel(&z16, &z32);
    assert!(dz > 1e-4 && dz < 0.1, "logits: relative difference {dz:.2e}");
    assert!(dh < dz / 3.0, "logits: f16 {dh:.2e} vs bf16 {dz:.2e}");
    eprintln!("logits vs f32: bf16 {dz:.2e}, f16 {dh:.2e}");
    assert!((l16 - l32).abs() < 2e-2 * l32.abs(), "loss {l16} (bf16) vs {l32} (f32)");
    assert_eq!(g16.len(), g32.len(), "every parameter gets a gradient");
    let (mut all16, mut all32) = (Vec::new(), Vec::new());
    for ((k16, t16), (k32, t32)) in g16.into_iter().zip(g32) {
        assert_eq!(k16, k32);
        assert_eq!(t16.dtype(), DType::F32, "the gradient of {k16} reaches the master weights in f32");
        all16.extend(flat(t16));
        all32.extend(flat(t32));
    }
    let dg = rel(&all16, &all32);
    eprintln!("gradients vs f32: bf16 {dg:.2e}");
    assert!(dg > 1e-5 && dg < 0.1, "gradients: relative difference {dg:.2e}");
}

#[test]
fn a_bf16_step_keeps_master_weights_optimiser_and_ema_in_f32_and_tracks_the_f32_step() {
    let run = |model: MobileVit<AD>, precision: Precision| {
        let cfg = TrainConfig { precision, ema_momentum: Some(0.5), ..TrainConfig::cvnets(1) };
        let mut trainer = Trainer::new(model, cfg);
        for it in 0..3 {
            let (x, y) = batch(10 + it);
            trainer.step(&[(x, y)], 0).unwrap();
        }
        trainer
    };
    let t32 = run(timm_tiny(), Precision::F32);
    let t16 = run(timm_tiny(), Precision::Bf16);
    assert!(dtypes(&t16.model).iter().all(|(_, d)| *d == DType::F32), "master weights f32");
    let ema = &t16.ema.as_ref().unwrap().model;
    assert!(dtypes(ema).iter().all(|(_, d)| *d == DType::F32), "EMA f32");
    let s16: Vec<_> = flat_tensors(&t16.model).into_iter().map(|(k, t)| (k, flat(t))).collect();
    let s32: Vec<_> = flat_tensors(&t32.model).into_iter().map(|(k, t)| (k, flat(t))).collect();
    let (mut a, mut b, mut ra, mut rb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((k, v16), (_, v32)) in s16.iter().zip(&s32) {
        if k.contains("running_mean") {
            ra.extend(v16);
            rb.extend(v32);
        }
        a.extend(v16);
        b.extend(v32);
    }
    // The batch statistics came from bf16 activations, into f32 running statistics.
    let dr = rel(&ra, &rb);
    assert!(ra.len() > 100 && dr > 0.0 && dr < 2e-2, "running means: relative difference {dr:.2e}");
    // Three AdamW steps at the warmup LR move each weight by ~lr; bf16 and f32 agree closely
    // on the whole state, and do differ.
    let d = rel(&a, &b);
    eprintln!("after 3 steps vs f32: state {d:.2e}, running means {dr:.2e}");
    assert!(d > 0.0 && d < 1e-2, "state after 3 steps: relative difference {d:.2e}");
    assert!(!t16.optim.state.is_empty());
    for (k, m) in &t16.optim.state {
        assert_eq!((m.m.dtype(), m.v.dtype()), (DType::F32, DType::F32), "AdamW moments of {k} in f32");
    }
}

#[test]
fn a_bf16_eval_view_folds_the_f32_batch_norm_into_bf16_convs() {
    use burn::module::AutodiffModule;
    let model = timm_tiny().valid();
    let x = batch(2).0.inner();
    let z32 = flat(model.forward(x.clone()).reshape([-1]));
    let view = compute_view(&model, Precision::Bf16);
    let z16 = view.forward(x.cast(FloatDType::BF16));
    assert_eq!(z16.dtype(), DType::BF16);
    let d = rel(&flat(z16.reshape([-1])), &z32);
    assert!(d > 1e-4 && d < 5e-2, "eval logits: relative difference {d:.2e}");
}

#[test]
fn a_bf16_step_runs_with_stochastic_depth_and_dropout() {
    // Their random masks are drawn in the device's default dtype (f32) and must join the bf16
    // branch in its own (burn-flex panics on mixed dtypes).
    let mut cfg = tiny_mobilevit();
    cfg.drop_path_rate = 0.2;
    cfg.drop_rate = 0.2;
    let model: MobileVit<AD> = cfg.init(&DEV);
    let (x, y) = batch(3);
    let y = y.clamp(0, 2);
    let view = compute_view(&model, Precision::Bf16);
    let logits = loss_input(view.logits(x.cast(FloatDType::BF16)));
    let loss = exvit_train::smoothed_cross_entropy::<AD>(&DEV).forward(logits, y);
    let value: f32 = loss.clone().into_scalar().elem();
    assert!(value.is_finite());
    let grads = loss.backward();
    assert!(exvit_zoo::flat_grads(&model, &grads).iter().all(|(_, g)| g.dtype() == DType::F32));
}
