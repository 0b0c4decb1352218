//! Synthetic report inputs: three models x two seeds of training curves, probes and CKA.
#![allow(dead_code)]

use std::path::PathBuf;

use exvit_report::{Inputs, Run};
use exvit_rundir::{
    AttentionMap, AttentionMaps, AttentionRow, CkaRow, MapImage, MetricKind, MetricRow, Predictions, ProbeRow,
    Provenance,
};

pub const MODELS: [&str; 3] = ["mobilevit_xxs", "exmobilevit_xxs", "mobilevit_xxs_head432"];
/// Final top-1 per model and seed (0, 1).
pub const TOP1: [[f64; 2]; 3] = [[60.0, 62.0], [61.0, 64.0], [60.5, 61.5]];

fn row(kind: MetricKind, epoch: u64, it: u64, loss: f64, top1: f64) -> MetricRow {
    MetricRow {
        kind,
        epoch,
        iteration: it,
        lr: 1e-3,
        loss,
        top1,
        top5: (top1 + 25.0).min(100.0),
        ema_top1: top1 - 3.0,
        ema_top5: (top1 + 20.0).min(100.0),
        img_per_s: if kind == MetricKind::Train { 300.0 } else { 0.0 },
        resolution: 32,
        batch: 64,
    }
}

/// Images in each run's predictions.
pub const IMAGES: usize = 200;

/// Per-image results with `top1`% right: the first images right (rank 0), the rest rank 1.
fn predictions(top1: f64) -> Predictions {
    let right = (top1 * IMAGES as f64 / 100.0).round() as usize;
    Predictions {
        epoch: 3,
        labels: (0..IMAGES as u32).map(|i| i % 10).collect(),
        ranks: (0..IMAGES).map(|i| u32::from(i >= right)).collect(),
        ema_ranks: None,
    }
}

pub fn inputs() -> Inputs {
    let mut runs = Vec::new();
    for (m, model) in MODELS.iter().enumerate() {
        for seed in 0..2u64 {
            let mut metrics = Vec::new();
            for e in 0..4u64 {
                for s in 0..5u64 {
                    metrics.push(row(
                        MetricKind::Train,
                        e,
                        e * 5 + s + 1,
                        2.3 - 0.4 * e as f64 - 0.02 * s as f64 + 0.05 * m as f64,
                        0.0,
                    ));
                }
                let frac = (e + 1) as f64 / 4.0;
                metrics.push(row(
                    MetricKind::Eval,
                    e,
                    (e + 1) * 5,
                    2.2 - 0.35 * e as f64,
                    TOP1[m][seed as usize] * frac,
                ));
            }
            runs.push(Run {
                dir: PathBuf::from(format!("runs/{model}-s{seed}")),
                model: model.to_string(),
                seed,
                config_text: format!("model = \"{model}\"\nseed = {seed}\n"),
                metrics,
                provenance: Some(Provenance {
                    git_commit: Some("abc123".into()),
                    config_hash: Some("00ff".into()),
                    exvit_version: Some("0.1.0".into()),
                    burn_version: Some("0.21.0".into()),
                    cpu: Some("Test CPU".into()),
                    threads: Some(2),
                    wall_seconds_this_process: Some(61.5),
                    ..Default::default()
                }),
                params: Some(1_272_024 + m as u64 * 10_000),
                predictions: Some(predictions(TOP1[m][seed as usize])),
            });
        }
    }
    let taps = ["stem", "stages.1", "stages.2", "stages.3", "final_conv", "pooled"];
    let mut probes = Vec::new();
    for (m, model) in MODELS.iter().enumerate().take(2) {
        for weights in ["runs/w.safetensors", "init(seed=0)"] {
            for (i, tap) in taps.iter().enumerate() {
                let top1 =
                    if weights.starts_with("init(") { 30.0 - i as f64 } else { 35.0 + 5.0 * i as f64 + m as f64 };
                probes.push(ProbeRow {
                    model: model.to_string(),
                    weights: weights.into(),
                    tap: tap.to_string(),
                    pooling: if *tap == "pooled" { "none".into() } else { "gap".into() },
                    dim: 16 * (i as u32 + 1),
                    wd: 1e-4,
                    top1,
                    top5: top1 + 30.0,
                    n_train: 1000,
                    n_eval: 200,
                    seed: 0,
                    seconds: 0.5,
                });
            }
        }
    }
    let mut cka = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            cka.push(CkaRow {
                model_a: "mobilevit_xxs".into(),
                weights_a: "runs/w.safetensors".into(),
                tap_a: taps[a].into(),
                model_b: "mobilevit_xxs".into(),
                weights_b: "runs/w.safetensors".into(),
                tap_b: taps[b].into(),
                n: 200,
                cka: 1.0 - 0.2 * (a as f64 - b as f64).abs(),
            });
        }
    }
    Inputs { runs, probes, cka, files: vec![PathBuf::from("probes.parquet")], ..Default::default() }
}

/// [`inputs`] with attention statistics (two models, trained and at init; stages.2.1 with two
/// layers on a 4x4 grid, stages.3.1 with one on 2x2; 4 heads) and maps of one image.
pub fn inputs_with_attention() -> Inputs {
    let mut i = inputs();
    for model in &MODELS[..2] {
        for weights in ["runs/w.safetensors", "init(seed=0)"] {
            for (block, layer, grid, step) in
                [("stages.2.1", 0u32, 4u32, 16.0), ("stages.2.1", 1, 4, 16.0), ("stages.3.1", 0, 2, 32.0)]
            {
                for head in 0..4u32 {
                    let trained = !weights.starts_with("init(");
                    i.attention.push(AttentionRow {
                        model: model.to_string(),
                        weights: weights.into(),
                        block: block.into(),
                        layer,
                        head,
                        size: 64,
                        grid_h: grid,
                        grid_w: grid,
                        step_h: step,
                        step_w: step,
                        distance: if trained { 10.0 + 5.0 * layer as f64 + head as f64 } else { 20.0 - head as f64 },
                        entropy: 0.5 + 0.25 * head as f64,
                        self_attention: 0.1 * (head + 1) as f64,
                        images: 100,
                    });
                }
            }
        }
    }
    let rgb: Vec<u8> = (0..8 * 8).flat_map(|p| [(p * 4) as u8, 128, 255 - (p * 4) as u8]).collect();
    let image = MapImage { image: 0, label: "cat".into(), source: "val/cat/0.png".into(), width: 8, height: 8, rgb };
    let mut maps = Vec::new();
    for (block, grid) in [("stages.2.1", 4u32), ("stages.3.1", 2)] {
        for head in 0..4u32 {
            for query in ["centre", "mean"] {
                let n = (grid * grid) as usize;
                let mut values = vec![0.5 / (n - 1) as f32; n];
                values[head as usize % n] = 0.5;
                maps.push(AttentionMap {
                    model: MODELS[0].into(),
                    weights: "runs/w.safetensors".into(),
                    image: 0,
                    block: block.into(),
                    layer: 0,
                    head,
                    query: query.into(),
                    grid_h: grid,
                    grid_w: grid,
                    values,
                });
            }
        }
    }
    i.maps = AttentionMaps { images: vec![image], maps };
    i
}
