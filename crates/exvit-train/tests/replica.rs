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
        let role = ReplicaRole { replica: Replica { rank, world: 2 }, initial: None, after_update, data: opened };
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
    let stop = std::sync::atomic::AtomicBool::new(false);
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
