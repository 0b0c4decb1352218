//! One replica of a data-parallel run (`train_replica`), on the CPU without a collective: each
//! replica trains on its shard of every epoch (half the steps of one device for two replicas),
//! its parameters pass through the `after_update` hook after every optimiser step (where DDP
//! marks them for all-reduce), and only rank 0 writes the run's files. And a whole run in bf16
//! (`recipe.precision`; the CLI allows it on CUDA only, the library anywhere): recorded in its
//! config, f32 weights on disk, resumable.

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Autodiff;
use burn_flex::{Flex, FlexDevice};
use exvit_data::resize::Filter;
use exvit_data::sampler::Replica;
use exvit_rundir::{read_metrics, MetricKind};
use exvit_train::run::{train_replica, ReplicaRole, RunConfig};
use exvit_train::TrainConfig;
use exvit_zoo::MobileVit;

type AD = Autodiff<Flex>;

fn config(data: PathBuf, out: PathBuf) -> RunConfig {
    let mut recipe = TrainConfig::cvnets(1);
    recipe.schedule.warmup_iters = 2;
    RunConfig {
        model: common::repo().join("tests/fixtures/parity/tiny.toml").display().to_string(),
        train_data: data,
        val_data: None,
        cifar_val_split: None,
        out,
        epochs: 1,
        seed: 3,
        size: 32,
        batch: 4,
        multi_scale: None,
        accum: 1,
        workers: Some(1),
        interpolation: Filter::Bilinear,
        rrc_scale: (0.5, 1.0),
        eval_crop_pct: 0.875,
        eval_size: None,
        recipe,
        checkpoint_every: None,
        keep_last: 1,
        init_from: None,
        max_iterations: None,
        guard_every: 10,
        allow_nonfinite: false,
    }
}

static UPDATES: AtomicUsize = AtomicUsize::new(0);

fn count_update(m: MobileVit<AD>) -> MobileVit<AD> {
    UPDATES.fetch_add(1, Ordering::SeqCst);
    m
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn replicas_train_their_shard_and_only_rank_0_writes() {
    // 3 classes x 8 images = 24: one device takes 6 steps of 4, each of 2 replicas 3.
    let data = common::tinted_dataset("replica", 8);
    let root = data.parent().unwrap().to_path_buf();
    let run = |rank: usize, after_update: Option<fn(MobileVit<AD>) -> MobileVit<AD>>| {
        let out = root.join(format!("run-{rank}"));
        let cfg = config(data.clone(), out.clone());
        // Rank 1 gets the datasets opened once for all replicas (as `ddp` does), rank 0 opens them.
        let opened = (rank == 1).then(|| cfg.validate().unwrap());
        let role = ReplicaRole {
            replica: Replica { rank, world: 2 },
            initial: None,
            after_update,
            reduce: None,
            guard: None,
            data: opened,
        };
        let summary = train_replica::<AD>(&cfg, false, &|_| false, &FlexDevice, role, |_| {}).unwrap();
        (summary, out)
    };
    let (s1, out1) = run(1, Some(count_update));
    assert_eq!(s1.position.iteration, 3, "rank 1 of 2 runs half of the 6 steps");
    assert!(files(&out1).is_empty(), "rank 1 wrote {:?}", files(&out1));
    // Once when the trainer starts, then after each of the 3 steps.
    assert_eq!(UPDATES.load(Ordering::SeqCst), 4);

    let (s0, out0) = run(0, None);
    assert_eq!(s0.position.iteration, 3);
    let written = files(&out0);
    for f in ["config.toml", "metrics.parquet", "model.safetensors", "ema.safetensors", "provenance.json"] {
        assert!(written.iter().any(|w| w == f), "rank 0 wrote {written:?}, not {f}");
    }
    let rows = read_metrics(&out0.join("metrics.parquet")).unwrap();
    assert_eq!(rows.iter().filter(|r| r.kind == MetricKind::Train).count(), 3);
    assert!(rows.iter().all(|r| r.kind != MetricKind::Train || r.batch == 4));
    let prov = std::fs::read_to_string(out0.join("provenance.json")).unwrap();
    assert!(prov.contains("\"replicas\": 2"), "{prov}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_bf16_run_records_its_precision_saves_f32_weights_and_resumes() {
    let data = common::tinted_dataset("bf16-run", 4);
    let root = data.parent().unwrap().to_path_buf();
    let out = root.join("run");
    let mut cfg = config(data.clone(), out.clone());
    cfg.recipe.precision = exvit_train::Precision::Bf16;
    cfg.max_iterations = Some(2);
    let stop = AtomicBool::new(false);
    let s = exvit_train::run::train_run::<AD>(&cfg, false, &stop, &FlexDevice, |_| {}).unwrap();
    assert_eq!(s.position.iteration, 2);
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(written.contains("precision = \"bf16\""), "{written}");
    // The run's files hold the f32 master weights.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st
        .tensors()
        .iter()
        .all(|(k, t)| t.dtype() == safetensors::Dtype::F32 || k.ends_with("num_batches_tracked")));
    // Resumed from its checkpoint (the config read back), it continues to the end of the epoch.
    cfg = RunConfig::from_toml_file(&out.join("config.toml")).unwrap();
    cfg.max_iterations = None;
    assert_eq!(cfg.recipe.precision, exvit_train::Precision::Bf16);
    let s = exvit_train::run::train_run::<AD>(&cfg, true, &stop, &FlexDevice, |_| {}).unwrap();
    assert_eq!(s.position.iteration, 3, "12 images in batches of 4");
    let _ = std::fs::remove_dir_all(&root);
}

// ---- replicas on threads (`exvit train --replicas N`) --------------------------------------

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::TensorData;
use exvit_train::guard::GuardError;
use exvit_train::replicas::{reduce_hook, train_replicas, Faults, ThreadAllReduce};
use exvit_train::run::RunError;
use exvit_train::trainer::Trainer;
use exvit_zoo::named_tensors;

fn batch(seed: u64, labels: Vec<i64>) -> (Tensor<AD, 4>, Tensor<AD, 1, Int>) {
    let n = labels.len();
    let x = exvit_zoo::refinit::reference_input(seed, [n, 3, 32, 32]);
    (Tensor::from_data(x, &FlexDevice), Tensor::from_data(TensorData::new(labels, [n]), &FlexDevice))
}

/// The learned parameters on the host (the BN running statistics are each replica's own).
fn host(model: &MobileVit<AD>) -> Vec<(String, Vec<f32>)> {
    named_tensors(model)
        .into_iter()
        .filter(|t| exvit_zoo::TensorKind::of(&t.key) == exvit_zoo::TensorKind::Param)
        .map(|t| (t.key, t.data.to_vec::<f32>().unwrap()))
        .collect()
}

/// Two replicas on threads, each stepping on half of a batch with their gradients averaged,
/// equal one trainer stepping on the same two halves as two micro-batches (each half then
/// normalises its own BatchNorm statistics, as each replica does): the same update, within
/// float rounding, after every one of 4 steps, and the two replicas identical bit for bit.
#[test]
fn two_replicas_at_half_batch_equal_one_trainer_at_the_whole_batch() {
    let model_cfg = common::tiny_mobilevit();
    let recipe = TrainConfig::cvnets(2);
    let init = exvit_zoo::refinit::reference_init(model_cfg.init::<AD>(&FlexDevice), 9);
    let mut one = Trainer::new(init.clone(), recipe);
    let reducer = Arc::new(ThreadAllReduce::new(2));
    let replicas: Vec<_> = (0..2)
        .map(|rank| {
            let (reducer, init) = (reducer.clone(), init.clone());
            std::thread::spawn(move || {
                // Own autodiff leaves (burn's graph locks deadlock across threads that share them).
                let mut t = Trainer::new(init.fork(&FlexDevice), recipe);
                t.reduce = Some(reduce_hook(reducer, rank, Faults::default()));
                let mut after = Vec::new();
                for step in 0..4u64 {
                    let half = batch(100 + 2 * step + rank as u64, vec![rank as i64, 2, 1]);
                    let stats = t.step(&[half], 0).unwrap();
                    after.push((stats.loss, host(&t.model)));
                }
                after
            })
        })
        .collect();
    let replicas: Vec<_> = replicas.into_iter().map(|h| h.join().unwrap()).collect();
    for step in 0..4u64 {
        let micro = [batch(100 + 2 * step, vec![0, 2, 1]), batch(101 + 2 * step, vec![1, 2, 1])];
        let stats = one.step(&micro, 0).unwrap();
        let (r0, r1) = (&replicas[0][step as usize], &replicas[1][step as usize]);
        assert_eq!(r0.1, r1.1, "step {step}: the replicas differ");
        assert!((r0.0 - stats.loss).abs() < 1e-6, "step {step}: loss {} vs {}", r0.0, stats.loss);
        let mut worst = 0f32;
        for ((_, a), (_, b)) in host(&one.model).iter().zip(&r0.1) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
            }
        }
        assert!(worst <= 1e-5, "step {step}: replicas vs one trainer differ by {worst:e}");
    }
}

fn replicated(tag: &str) -> (RunConfig, PathBuf) {
    let data = common::tinted_dataset(tag, 8);
    let root = data.parent().unwrap().to_path_buf();
    let mut cfg = config(data, root.join("run"));
    cfg.epochs = 2;
    cfg.recipe.schedule.max_epochs = 2;
    cfg.guard_every = 1;
    cfg.checkpoint_every = Some(1);
    (cfg, root)
}

fn weights(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Vec<_> = st.tensors().into_iter().map(|(k, v)| (k, v.data().to_vec())).collect();
    t.sort();
    t
}

/// A run of 2 replicas on threads checks that they stay identical after every step; stopped
/// after 4 iterations and resumed, it ends with the uninterrupted run's weights, bit for bit.
#[test]
fn replicas_on_threads_stay_identical_and_resume_exactly() {
    let (cfg, root) = replicated("threads-resume");
    let stop = Arc::new(AtomicBool::new(false));
    let s = train_replicas::<AD>(&cfg, false, stop.clone(), 2, &FlexDevice, Faults::default(), |_| {}).unwrap();
    assert_eq!(s.position.iteration, 6, "24 images, 2 replicas of batch 4: 3 steps an epoch");
    let prov = std::fs::read_to_string(cfg.out.join("provenance.json")).unwrap();
    assert!(prov.contains("\"replicas\": 2"), "{prov}");

    let mut cut = cfg.clone();
    cut.out = root.join("cut");
    cut.max_iterations = Some(4);
    let s = train_replicas::<AD>(&cut, false, stop.clone(), 2, &FlexDevice, Faults::default(), |_| {}).unwrap();
    assert!(s.interrupted && s.position.iteration == 4, "{s:?}");
    cut.max_iterations = None;
    let s = train_replicas::<AD>(&cut, true, stop, 2, &FlexDevice, Faults::default(), |_| {}).unwrap();
    assert_eq!(s.position.iteration, 6);
    assert_eq!(weights(&cfg.out.join("model.safetensors")), weights(&cut.out.join("model.safetensors")));
    assert_eq!(weights(&cfg.out.join("ema.safetensors")), weights(&cut.out.join("ema.safetensors")));
    let _ = std::fs::remove_dir_all(&root);
}

/// A replica that takes part in the all-reduce but keeps its own gradients (the silent failure
/// of a collective that does nothing) is caught at the first check, which names the step and the
/// replica; a replica that fails ends the run with its own error, the others released.
#[test]
fn the_guards_catch_a_replica_out_of_sync_and_a_failing_replica() {
    let (cfg, root) = replicated("threads-guard");
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Faults { keep_own_gradients: Some(1), ..Faults::default() };
    let e = train_replicas::<AD>(&cfg, false, stop.clone(), 2, &FlexDevice, faults, |_| {}).unwrap_err();
    assert!(matches!(e, RunError::Guard(GuardError::Diverged { iteration: 1, replica: 1, .. })), "{e}");
    assert!(e.to_string().contains("iteration 1: the parameters of replica 1 differ from replica 0's"), "{e}");
    // The bad step was not checkpointed.
    assert!(!cfg.out.join("ckpt-00000001.safetensors").exists());

    let mut cfg = cfg;
    cfg.out = root.join("fail");
    let faults = Faults { fail_at: Some((1, 2)), ..Faults::default() };
    let e = train_replicas::<AD>(&cfg, false, stop, 2, &FlexDevice, faults, |_| {}).unwrap_err();
    assert!(e.to_string().contains("replica 1: injected failure at all-reduce round 2"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// One replica: a non-finite parameter stops the run at the next check, naming the tensor.
#[test]
fn a_non_finite_parameter_is_named() {
    let model = exvit_zoo::refinit::reference_init(common::tiny_mobilevit().init::<Flex>(&FlexDevice), 1);
    let fp = exvit_train::guard::Fingerprint::of(&model);
    assert!(exvit_train::guard::check_finite(&fp, 5, 0).is_ok());
    let bad = exvit_zoo::map_flat(model, |key, t| {
        (key == "stages.1.0.conv1_1x1.conv.weight").then(|| t.mul_scalar(f32::NAN))
    });
    let e = exvit_train::guard::check_finite(&exvit_train::guard::Fingerprint::of(&bad), 5, 0).unwrap_err();
    assert!(
        e.to_string().starts_with("iteration 5: `stages.1.0.conv1_1x1.conv.weight` of replica 0 is not finite"),
        "{e}"
    );
}
