//! Tap points, pooling, and the resumable feature cache.

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::prelude::*;
use common::{tinted_dataset, tiny, tiny_ex, B};
use exvit_data::resize::Filter;
use exvit_data::transform::{EvalTransform, Normalize};
use exvit_probe::{extract, list_taps, Cache, Dtype, ExtractConfig, Pooling, ProbeError, TapSpec};
use exvit_zoo::{MobileVit, TapOutput};

fn dev() -> burn_flex::FlexDevice {
    burn_flex::FlexDevice
}

fn image(seed: u64, side: usize) -> Tensor<B, 4> {
    let mut r = exvit_data::rng::Rng::keyed(seed, &[9]);
    let v: Vec<f32> = (0..2 * 3 * side * side).map(|_| r.unit() as f32).collect();
    Tensor::from_data(TensorData::new(v, [2, 3, side, side]), &dev())
}

fn max_diff(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
    (a - b).abs().max().into_scalar()
}

fn gap(t: Tensor<B, 4>) -> Tensor<B, 2> {
    Pooling::Gap.apply("t", TapOutput::Map(t)).unwrap()
}

#[test]
fn taps_agree_with_the_forward_pass() {
    B::seed(&dev(), 3);
    let model: MobileVit<B> = tiny_ex(5).init(&dev());
    let names = model.tap_names();
    assert_eq!(
        names,
        [
            "stem",
            "stages.0",
            "stages.1",
            "stages.2.1.transformer.0",
            "stages.2.1.norm",
            "stages.2",
            "stages.3.1.transformer.0",
            "stages.3.1.transformer.1",
            "stages.3.1.norm",
            "stages.3",
            "stages.4.1.transformer.0",
            "stages.4.1.norm",
            "stages.4",
            "final_conv",
            "exshortcuts.0",
            "exshortcuts.1",
            "pooled"
        ]
    );
    let x = image(1, 64);
    let all = model.forward_all(x.clone());
    let taps = model.forward_taps(x, &names, "tiny_ex").unwrap();
    let get = |n: &str| taps[names.iter().position(|m| m == n).unwrap()].clone();
    let map = |t: TapOutput<B>| match t {
        TapOutput::Map(m) => m,
        TapOutput::Vector(_) => panic!("a map was expected"),
    };
    for (i, s) in all.stages.iter().enumerate() {
        let t = map(get(&format!("stages.{i}")));
        assert_eq!(t.dims(), s.dims());
        assert_eq!(max_diff(gap(t), gap(s.clone())), 0.0, "stages.{i}");
    }
    assert_eq!(max_diff(gap(map(get("final_conv"))), gap(all.final_conv.clone())), 0.0);
    assert_eq!(max_diff(gap(map(get("exshortcuts.1"))), all.exshortcuts[1].clone()), 0.0);
    match get("pooled") {
        TapOutput::Vector(v) => assert_eq!(max_diff(v, all.pooled.clone()), 0.0),
        TapOutput::Map(_) => panic!("pooled is a vector"),
    }
    // The transformer tap holds the block's tokens (after its LayerNorm): 24 wide, and a
    // LayerNorm without affine shift... is checked through its per-token mean over channels.
    let t = map(get("stages.3.1.norm"));
    assert_eq!(t.dims(), [2, 24, 4, 4]);
    // Asking for an early tap alone gives the same values (the forward pass stops early).
    let early = model.forward_taps(image(1, 64), &["stages.1".to_string()], "tiny_ex").unwrap();
    assert_eq!(max_diff(gap(map(early[0].clone())), gap(all.stages[1].clone())), 0.0);
    let e = model.forward_taps(image(1, 64), &["stages.9".to_string()], "tiny_ex").unwrap_err().to_string();
    assert!(e.contains("no tap `stages.9`") && e.contains("exshortcuts.0"), "{e}");
}

#[test]
fn per_layer_taps_are_the_transformer_tokens_folded() {
    B::seed(&dev(), 4);
    let model: MobileVit<B> = tiny(5).init(&dev());
    let x = image(2, 64);
    let h = model.forward_taps(x.clone(), &["stages.2".to_string()], "tiny").unwrap();
    let TapOutput::Map(h) = h[0].clone() else { panic!() };
    let h = model.stages[3][0].forward(h);
    let exvit_zoo::StageBlock::MobileVit(block) = &model.stages[3][1] else { panic!("stage 3 is a MobileViT block") };
    let (out, maps) = block.forward_with_token_maps(h.clone());
    let (out_ref, layers) = block.forward_with_layers(h.clone());
    let (_, normed) = block.forward_with_tokens(h);
    assert_eq!(maps.layers.len(), 2);
    assert!(max_diff(gap(out), gap(out_ref)) < 1e-5);
    // Each layer's map is its tokens folded (the generic attention path agrees with the fused
    // one to float rounding), the post-norm map the LayerNorm's tokens: exactly the values.
    for (k, map) in maps.layers.iter().enumerate() {
        assert_eq!(map.dims(), [2, 24, 4, 4]);
        let folded = layers.token_map(layers.tokens[k].clone(), block.patch_size());
        assert!(max_diff(gap(map.clone()), gap(folded.clone())) < 1e-5, "layer {k}");
        let (a, b) = (map.clone().into_data().to_vec::<f32>().unwrap(), folded.into_data().to_vec::<f32>().unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4), "layer {k}: folded the same way");
    }
    let mut a = normed.into_data().to_vec::<f32>().unwrap();
    let mut b = maps.norm.clone().into_data().to_vec::<f32>().unwrap();
    a.sort_by(f32::total_cmp);
    b.sort_by(f32::total_cmp);
    assert_eq!(a, b);
    // The zoo's taps hold the same maps; the old name of the post-norm tap still works.
    let names: Vec<String> =
        ["stages.3.1.transformer.1", "stages.3.1.norm", "stages.3.1.transformer"].map(String::from).to_vec();
    let taps = model.forward_taps(x, &names, "tiny").unwrap();
    let map = |t: &TapOutput<B>| match t {
        TapOutput::Map(m) => m.clone().into_data().to_vec::<f32>().unwrap(),
        TapOutput::Vector(_) => panic!("a map"),
    };
    assert_eq!(map(&taps[0]), maps.layers[1].clone().into_data().to_vec::<f32>().unwrap());
    assert_eq!(map(&taps[1]), maps.norm.into_data().to_vec::<f32>().unwrap());
    assert_eq!(map(&taps[2]), map(&taps[1]));
}

#[test]
fn pooling_by_hand() {
    // One image, 2 channels, 4x4: channel 0 = 0..16, channel 1 = its negation.
    let v: Vec<f32> = (0..16).map(|i| i as f32).chain((0..16).map(|i| -(i as f32))).collect();
    let t = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 2, 4, 4]), &dev());
    let run = |p: Pooling| p.apply("t", TapOutput::Map(t.clone())).unwrap().into_data().to_vec::<f32>().unwrap();
    assert_eq!(run(Pooling::Gap), [7.5, -7.5]);
    assert_eq!(run(Pooling::AvgMax), [7.5, -7.5, 15.0, 0.0]);
    // 2x2 cells: top-left of channel 0 = mean(0, 1, 4, 5) = 2.5, …
    assert_eq!(run(Pooling::Grid(2)), [2.5, 4.5, 10.5, 12.5, -2.5, -4.5, -10.5, -12.5]);
    assert_eq!(Pooling::Grid(2).dim(96), 384);
    assert_eq!(Pooling::AvgMax.dim(96), 192);
    let e = Pooling::Gap.apply("pooled", TapOutput::Vector(Tensor::<B, 2>::zeros([1, 3], &dev()))).unwrap_err();
    assert!(e.to_string().contains("already a vector"), "{e}");
    assert_eq!("grid3".parse::<Pooling>().unwrap(), Pooling::Grid(3));
    assert!("grid0".parse::<Pooling>().is_err() && "mean".parse::<Pooling>().is_err());
    assert_eq!(TapSpec::parse("stages.2:avgmax", Pooling::Gap).unwrap().column(), "stages.2:avgmax");
    assert_eq!(TapSpec::parse("stages.2", Pooling::Gap).unwrap().column(), "stages.2:gap");
    assert_eq!(TapSpec::parse("pooled", Pooling::Gap).unwrap().column(), "pooled:none");
}

#[test]
fn list_taps_gives_channels_and_strides() {
    let model: MobileVit<B> = tiny_ex(5).init(&dev());
    let taps = list_taps(&model, "tiny_ex", 64, &dev()).unwrap();
    let find = |n: &str| taps.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!((find("stem").channels, find("stem").stride), (8, 2));
    assert_eq!((find("stages.2").channels, find("stages.2").stride), (16, 8));
    assert_eq!((find("stages.4").channels, find("stages.4").stride), (32, 32));
    assert_eq!((find("exshortcuts.1").channels, find("exshortcuts.1").stride), (12, 16));
    assert_eq!((find("pooled").kind, find("pooled").channels), ("vector", 64 + 8 + 12));
}

fn config(taps: &[&str], dtype: Dtype) -> ExtractConfig {
    ExtractConfig {
        model: "tiny_ex".into(),
        weights: None,
        init_seed: 7,
        taps: taps.iter().map(|t| TapSpec::parse(t, Pooling::Gap).unwrap()).collect(),
        batch: 4,
        shard_rows: 8,
        dtype,
        eval: EvalTransform::from_crop_pct(32, 0.875, Filter::Bilinear),
        norm: Normalize::default(),
        workers: 2,
    }
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-probe-cache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn an_interrupted_extraction_resumes_to_the_same_cache() {
    let root = tinted_dataset("resume", 7); // 21 images: shards of 8, 8, 5
    let ds = Arc::new(exvit_data::open_path(&root, "train").unwrap());
    B::seed(&dev(), 7);
    let model: MobileVit<B> = tiny_ex(3).init(&dev());
    let cfg = config(&["stages.1:grid2", "stages.3.1.transformer", "exshortcuts.0:avgmax", "pooled"], Dtype::F32);
    let whole = temp("whole");
    let s = extract(&model, ds.clone(), &whole, &cfg, &dev(), &AtomicBool::new(false), |_, _| {}).unwrap();
    assert_eq!((s.shards_written, s.shards_kept, s.images, s.bad), (3, 0, 21, 0));

    // Stop after the first batch: the first shard is not complete, nothing is written.
    let part = temp("part");
    let stop = AtomicBool::new(true);
    let e = extract(&model, ds.clone(), &part, &cfg, &dev(), &stop, |_, _| {}).unwrap_err();
    assert!(matches!(e, ProbeError::Interrupted { done: 0, total: 3 }), "{e}");
    // Stop after three batches: one whole shard.
    let mut calls = 0;
    let stop = AtomicBool::new(false);
    let e = extract(&model, ds.clone(), &part, &cfg, &dev(), &stop, |_, _| {
        calls += 1;
        if calls == 3 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(e, ProbeError::Interrupted { done: 1, total: 3 }), "{e}");
    assert!(matches!(Cache::open(&part).unwrap_err(), ProbeError::Incomplete { missing: 2, total: 3, .. }));
    let s = extract(&model, ds.clone(), &part, &cfg, &dev(), &AtomicBool::new(false), |_, _| {}).unwrap();
    assert_eq!((s.shards_written, s.shards_kept, s.images), (2, 1, 13));

    let (a, b) = (Cache::open(&whole).unwrap(), Cache::open(&part).unwrap());
    let cols = ["stages.1:grid2", "stages.3.1.transformer:gap", "exshortcuts.0", "pooled"];
    let (fa, fb) = (a.read(&cols).unwrap(), b.read(&cols).unwrap());
    assert_eq!(fa.x, fb.x, "a resumed cache equals an uninterrupted one");
    assert_eq!(fa.dims, [16 * 4, 24, 16, 64 + 8 + 12]);
    assert_eq!(fa.indices, (0..21).collect::<Vec<u32>>());
    assert_eq!(fa.labels, (0..21).map(|i| i / 7).collect::<Vec<u32>>());

    // The cached `pooled` row equals the model's own on the same input.
    let batch = exvit_data::loader::load_batch(
        &ds,
        &exvit_data::sampler::BatchPlan { indices: vec![5], size: 32 },
        0,
        0,
        &exvit_data::loader::LoaderConfig::new(exvit_data::transform::Transform::Eval(cfg.eval), 0),
    )
    .unwrap();
    let x = Tensor::<B, 4>::from_data(TensorData::new(batch.images, [1, 3, 32, 32]), &dev());
    let pooled = model.forward_all(x).pooled.into_data().to_vec::<f32>().unwrap();
    // (Batches of 4 and of 1 round differently in the matmuls: equal to float precision.)
    let row = &fa.x.row(5)[16 * 4 + 24 + 16..];
    assert_eq!(row.len(), pooled.len());
    for (a, b) in row.iter().zip(&pooled) {
        assert!((a - b).abs() < 1e-5, "cached {a} vs forward {b}");
    }

    // Other settings on the same folder are refused, naming the field.
    let mut other = cfg.clone();
    other.eval = EvalTransform::from_crop_pct(64, 0.875, Filter::Bilinear);
    let e = extract(&model, ds.clone(), &part, &other, &dev(), &AtomicBool::new(false), |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("resolution = 32") && e.to_string().contains("resolution = 64"), "{e}");
    for d in [whole, part] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn f16_caches_hold_the_features_to_half_precision() {
    let root = tinted_dataset("f16", 3);
    let ds = Arc::new(exvit_data::open_path(&root, "train").unwrap());
    let model: MobileVit<B> = tiny_ex(3).init(&dev());
    let (d32, d16) = (temp("f32"), temp("f16"));
    let stop = AtomicBool::new(false);
    extract(&model, ds.clone(), &d32, &config(&["stages.2", "final_conv"], Dtype::F32), &dev(), &stop, |_, _| {})
        .unwrap();
    extract(&model, ds, &d16, &config(&["stages.2", "final_conv"], Dtype::F16), &dev(), &stop, |_, _| {}).unwrap();
    let a = Cache::open(&d32).unwrap().read(&["stages.2", "final_conv"]).unwrap();
    let b = Cache::open(&d16).unwrap().read(&["stages.2", "final_conv"]).unwrap();
    assert_ne!(a.x, b.x, "f16 rounds");
    for (x, y) in a.x.data.iter().zip(&b.x.data) {
        assert!((x - y).abs() <= x.abs() * 1e-3 + 1e-6, "{x} vs {y}");
    }
    let size = |d: &PathBuf| std::fs::metadata(d.join("shard-00000.arrow")).unwrap().len();
    assert!(size(&d16) < size(&d32), "an f16 shard is smaller");
    let e = Cache::open(&d32).unwrap().read(&["stages.3"]).unwrap_err().to_string();
    assert!(e.contains("no column `stages.3`") && e.contains("stages.2:gap"), "{e}");
}

#[test]
fn bad_extraction_settings_are_refused() {
    let root = tinted_dataset("badcfg", 1);
    let ds = Arc::new(exvit_data::open_path(&root, "train").unwrap());
    let model: MobileVit<B> = tiny_ex(3).init(&dev());
    let stop = AtomicBool::new(false);
    let run = |cfg: ExtractConfig| {
        extract(&model, ds.clone(), &temp("bad"), &cfg, &dev(), &stop, |_, _| {}).unwrap_err().to_string()
    };
    let mut c = config(&["stages.2"], Dtype::F32);
    c.shard_rows = 6;
    assert!(run(c).contains("--shard-rows"));
    assert!(run(config(&["stages.7"], Dtype::F32)).contains("no tap `stages.7`"));
    assert!(run(config(&["stages.4:grid4"], Dtype::F32)).contains("does not fit"));
    let mut c = config(&["pooled"], Dtype::F32);
    c.taps[0].pooling = Pooling::Gap;
    assert!(run(c).contains("is a vector"));
}
