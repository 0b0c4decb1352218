//! Exact resume: training interrupted after a step, checkpointed, and resumed into a trainer
//! whose model was initialised differently (as in a new process) ends in exactly the state of an
//! uninterrupted run: the same losses step by step, the same model, EMA and optimiser tensors.
//! (The kill -9 test of the `exvit train` command comes with the runs issue.)

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_flex::{Flex, FlexDevice};
use exvit_data::loader::LoaderConfig;
use exvit_data::sampler::{MultiScale, Replica, ScaleRule};
use exvit_data::transform::{TrainTransform, Transform};
use exvit_train::{fit, load_checkpoint, save_checkpoint, FitPlan, Position, Sampling, TrainConfig, Trainer};
use exvit_zoo::{flat_tensors, MobileVit};

type AD = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;

fn plan() -> FitPlan {
    FitPlan {
        sampling: Sampling::MultiScale(MultiScale {
            sizes: vec![24, 32],
            ref_size: 32,
            base: 4,
            rule: ScaleRule::V02,
            n_gpus: 1,
        }),
        accum: 2,
        epochs: 2,
        seed: 5,
        replica: Replica::default(),
        loader: LoaderConfig::new(Transform::Train(TrainTransform::new(32)), 0),
    }
}

fn trainer(model: MobileVit<AD>) -> Trainer<AD, MobileVit<AD>> {
    let mut cfg = TrainConfig::cvnets(2);
    cfg.schedule.warmup_iters = 3;
    cfg.ema_momentum = Some(0.05);
    Trainer::new(model, cfg)
}

/// A copy that shares nothing with `m`: burn's `clone` shares BN running statistics (its
/// `RunningState` is behind an `Arc`, and `map`/`load_record` write into it), so two clones
/// trained side by side would update the same statistics. `valid()` makes new ones.
fn deep_copy(m: &MobileVit<AD>) -> MobileVit<AD> {
    MobileVit::<AD>::from_inner(m.valid())
}

fn snapshot(t: &Trainer<AD, MobileVit<AD>>) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = Vec::new();
    let mut push = |prefix: &str, items: Vec<(String, Tensor<Flex, 1>)>| {
        for (k, v) in items {
            out.push((format!("{prefix}{k}"), v.into_data().to_vec().unwrap()));
        }
    };
    push("model.", flat_tensors(&t.model.valid()));
    push("ema.", flat_tensors(&t.ema.as_ref().unwrap().model));
    for (k, st) in &t.optim.state {
        out.push((format!("m.{k}"), st.m.clone().into_data().to_vec().unwrap()));
        out.push((format!("v.{k}"), st.v.clone().into_data().to_vec().unwrap()));
    }
    out
}

#[test]
fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
    let ds = Arc::new(exvit_data::open_split(&common::tinted_dataset("resume", 8)).unwrap());
    let plan = plan();
    // Uninterrupted.
    let base = common::tiny_mobilevit().init::<AD>(&DEV);
    let mut a = trainer(deep_copy(&base));
    let mut losses_a = Vec::new();
    let end = fit(&mut a, &ds, &plan, Position::default(), &DEV, |_, _, s| {
        losses_a.push(s.loss);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(end.epoch, 2);
    assert!(losses_a.len() >= 6, "{} steps", losses_a.len());

    // Interrupted after 3 steps (inside epoch 0), checkpointed.
    let ckpt = std::env::temp_dir().join(format!("exvit-resume-{}.safetensors", std::process::id()));
    let mut b = trainer(base);
    let mut losses_b = Vec::new();
    let stop = fit(&mut b, &ds, &plan, Position::default(), &DEV, |t, pos, s| {
        losses_b.push(s.loss);
        if pos.iteration == 3 {
            save_checkpoint(&ckpt, t, pos, &BTreeMap::from([("seed".to_string(), "5".to_string())])).unwrap();
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((stop.epoch, stop.step_in_epoch, stop.iteration), (0, 3, 3));

    // A "new process": different initial weights, then the checkpoint.
    let mut c = trainer(common::tiny_mobilevit().init::<AD>(&DEV));
    let (pos, meta) = load_checkpoint(&ckpt, &mut c, exvit_common::NonFinite::Refuse).unwrap();
    assert_eq!(pos, stop);
    assert_eq!(meta["seed"], "5");
    fit(&mut c, &ds, &plan, pos, &DEV, |_, _, s| {
        losses_b.push(s.loss);
        ControlFlow::Continue(())
    })
    .unwrap();

    assert_eq!(losses_a, losses_b, "per-step losses differ after the resume");
    assert_eq!(a.iteration, c.iteration);
    let (sa, sc) = (snapshot(&a), snapshot(&c));
    assert_eq!(sa.len(), sc.len());
    let differ: Vec<String> = sa
        .iter()
        .zip(&sc)
        .filter(|((_, va), (_, vc))| va != vc)
        .map(|((ka, va), (_, vc))| {
            let d = va.iter().zip(vc).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            format!("{ka} ({d:e})")
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} tensors differ between the uninterrupted and the resumed run: {differ:?}",
        differ.len(),
        sa.len()
    );
    let _ = std::fs::remove_file(&ckpt);
}

#[test]
fn a_checkpoint_of_another_model_is_refused_and_changes_nothing() {
    let ckpt = std::env::temp_dir().join(format!("exvit-mismatch-{}.safetensors", std::process::id()));
    let t = trainer(common::tiny_mobilevit().init::<AD>(&DEV));
    save_checkpoint(&ckpt, &t, Position::default(), &BTreeMap::new()).unwrap();
    // A model with 5 classes: its head is a different size.
    let mut cfg = TrainConfig::cvnets(2);
    cfg.ema_momentum = Some(0.05);
    let mut other = Trainer::new(
        exvit_zoo::resolve_model(common::repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(), 5)
            .unwrap()
            .init::<AD>(&DEV),
        cfg,
    );
    let before = flat_tensors(&other.model.valid())
        .into_iter()
        .map(|(k, v)| (k, v.into_data().to_vec::<f32>().unwrap()))
        .collect::<Vec<_>>();
    let e = load_checkpoint(&ckpt, &mut other, exvit_common::NonFinite::Refuse).unwrap_err().to_string();
    assert!(e.contains("head.fc.weight") || e.contains("head."), "{e}");
    assert!(e.contains(ckpt.to_str().unwrap()), "{e}");
    let after = flat_tensors(&other.model.valid())
        .into_iter()
        .map(|(k, v)| (k, v.into_data().to_vec::<f32>().unwrap()))
        .collect::<Vec<_>>();
    assert_eq!(before, after);
    let _ = std::fs::remove_file(&ckpt);
}

/// Rewrites the safetensors file `path` with `poison` applied to the values of tensor `key`.
fn poison(path: &std::path::Path, key: &str, poison: impl Fn(&mut [f32])) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<exvit_zoo::RawTensor> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let mut data = v.data().to_vec();
            if k == key {
                let mut f: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                poison(&mut f);
                data = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            }
            (k, v.dtype(), v.shape().to_vec(), data)
        })
        .collect();
    exvit_zoo::write_safetensors(path, &tensors, meta).unwrap();
}

/// A checkpoint holding NaN or Inf is refused, naming the tensors and counting the values, and
/// the trainer is left untouched; `NonFinite::Allow` loads it.
#[test]
fn a_checkpoint_with_non_finite_values_is_refused_unless_allowed() {
    use exvit_common::NonFinite;
    let ckpt = std::env::temp_dir().join(format!("exvit-nonfinite-{}.safetensors", std::process::id()));
    let t = trainer(common::tiny_mobilevit().init::<AD>(&DEV));
    save_checkpoint(&ckpt, &t, Position::default(), &BTreeMap::new()).unwrap();
    poison(&ckpt, "model.stem.conv.weight", |v| v[3] = f32::NAN);
    poison(&ckpt, "ema.head.fc.bias", |v| {
        v[0] = f32::INFINITY;
        v[1] = f32::NEG_INFINITY;
    });
    let mut other = trainer(common::tiny_mobilevit().init::<AD>(&DEV));
    let before = snapshot(&other);
    let e = load_checkpoint(&ckpt, &mut other, NonFinite::Refuse).unwrap_err().to_string();
    assert!(e.contains(ckpt.to_str().unwrap()), "{e}");
    assert!(
        e.contains("3 non-finite value(s) in 2 tensor(s): `model.stem.conv.weight`: 1 NaN; `ema.head.fc.bias`: 2 Inf"),
        "{e}"
    );
    assert!(e.contains("--allow-nonfinite"), "{e}");
    assert!(snapshot(&other) == before, "a refused checkpoint changed the trainer");
    load_checkpoint(&ckpt, &mut other, NonFinite::Allow).unwrap();
    let w = flat_tensors(&other.model.valid()).into_iter().find(|(k, _)| k == "stem.conv.weight").unwrap().1;
    assert!(w.into_data().to_vec::<f32>().unwrap()[3].is_nan(), "allowed, the NaN is loaded");
    let _ = std::fs::remove_file(&ckpt);
}
