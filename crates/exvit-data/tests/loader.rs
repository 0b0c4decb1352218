//! The parallel loader, on an ImageFolder (and its tar-shard and CIFAR-binary forms) generated
//! here: batches are identical whatever the number of workers, a resumed epoch repeats the
//! uninterrupted one, bad images are skipped and reported (or stop the run), and every source
//! loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use exvit_data::loader::{Batch, Loader, LoaderConfig};
use exvit_data::sampler::{Fixed, Replica};
use exvit_data::transform::{EvalTransform, TrainTransform, Transform};
use exvit_data::{open_cifar, open_split, resize::Filter, Dataset, OnBadImage};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-loader-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7 + seed) as u8, (y * 5 + seed * 3) as u8, ((x * y + seed) % 251) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut buf, ImageFormat::Jpeg).unwrap();
    buf.into_inner()
}

/// 3 classes x 7 images of varied sizes, plus one truncated JPEG in class "b".
fn folder(tag: &str) -> (PathBuf, Dataset) {
    let root = tmp(tag).join("train");
    for (c, class) in ["a", "b", "c"].iter().enumerate() {
        for i in 0..7u32 {
            write(&root.join(class).join(format!("{i}.jpg")), &jpeg(40 + 3 * i, 30 + 5 * (i % 3), c as u32 * 10 + i));
        }
    }
    let good = jpeg(50, 40, 99);
    write(&root.join("b/zz_cut.jpg"), &good[..good.len() / 2]);
    let ds = open_split(&root).unwrap();
    (root, ds)
}

fn run(ds: &Arc<Dataset>, cfg: &LoaderConfig, batch: usize, start: usize) -> Vec<Batch> {
    let plan =
        Fixed { batch, size: 24, shuffle: true, pad: false }.batches(ds.samples.len(), cfg.seed, 1, Replica::default());
    Loader::start(ds.clone(), plan, 1, start, cfg.clone()).unwrap().map(|b| b.unwrap()).collect()
}

fn train_cfg(workers: usize) -> LoaderConfig {
    let mut cfg = LoaderConfig::new(Transform::Train(TrainTransform::new(24)), 42);
    cfg.workers = workers;
    cfg
}

#[test]
fn batches_do_not_depend_on_the_number_of_workers() {
    let (_root, ds) = folder("workers");
    let ds = Arc::new(ds);
    let one = run(&ds, &train_cfg(1), 5, 0);
    let three = run(&ds, &train_cfg(3), 5, 0);
    assert_eq!(one.len(), 5, "22 samples in batches of 5");
    for (a, b) in one.iter().zip(&three) {
        assert_eq!((a.position, &a.indices, &a.labels), (b.position, &b.indices, &b.labels));
        assert!(a.images == b.images, "batch {}: pixels differ between 1 and 3 workers", a.position);
        assert_eq!(a.images.len(), a.len() * 3 * 24 * 24);
        assert!(a.images.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // A different seed augments differently.
    let mut other = train_cfg(2);
    other.seed = 43;
    assert!(run(&ds, &other, 5, 0)[0].images != one[0].images);
}

#[test]
fn a_resumed_epoch_repeats_the_uninterrupted_one() {
    let (_root, ds) = folder("resume");
    let ds = Arc::new(ds);
    let full = run(&ds, &train_cfg(2), 4, 0);
    let tail = run(&ds, &train_cfg(2), 4, 3);
    assert_eq!(tail.len(), full.len() - 3);
    for (a, b) in full[3..].iter().zip(&tail) {
        assert_eq!(a.position, b.position);
        assert!(a.images == b.images && a.indices == b.indices);
    }
}

#[test]
fn bad_images_are_skipped_and_reported_or_stop_the_run() {
    let (_root, ds) = folder("bad");
    let ds = Arc::new(ds);
    let batches = run(&ds, &train_cfg(2), 8, 0);
    let bad: Vec<&(String, String)> = batches.iter().flat_map(|b| &b.bad).collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].0.ends_with("zz_cut.jpg") && bad[0].1.contains("truncated"), "{bad:?}");
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 21, "every good image once");
    let mut cfg = train_cfg(2);
    cfg.on_bad_image = OnBadImage::Fail;
    let plan =
        Fixed { batch: 8, size: 24, shuffle: true, pad: false }.batches(ds.samples.len(), 42, 1, Replica::default());
    let results: Vec<_> = Loader::start(ds.clone(), plan, 1, 0, cfg).unwrap().collect();
    let err = results.iter().find_map(|r| r.as_ref().err()).expect("the truncated JPEG stops the run").to_string();
    assert!(err.contains("zz_cut.jpg"), "{err}");
    assert!(results.last().unwrap().is_err(), "nothing after the error");
}

#[test]
fn tar_shards_and_cifar_load_like_folders() {
    let (root, ds) = folder("shards");
    let packed = exvit_data::pack::pack_shards(&ds, &root.parent().unwrap().join("shards"), 6).unwrap();
    assert_eq!(packed.len(), 4);
    let shards = Arc::new(open_split(&root.parent().unwrap().join("shards")).unwrap());
    let ds = Arc::new(ds);
    let eval = LoaderConfig::new(Transform::Eval(EvalTransform { resize: 28, crop: 24, filter: Filter::Bicubic }), 0);
    let a = run(&ds, &eval, 6, 0);
    let b = run(&shards, &eval, 6, 0);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.images == y.images && x.labels == y.labels, "shards and folder differ at batch {}", x.position);
    }
    // CIFAR binary: raw records go straight to the transform.
    let cifar = tmp("cifar").join("cifar-10-batches-bin");
    write(&cifar.join("batches.meta.txt"), b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
    let rec = |label: u8| [vec![label], (0..3072).map(|i| (i % 256) as u8).collect()].concat();
    for i in 1..=5u8 {
        write(&cifar.join(format!("data_batch_{i}.bin")), &[rec(i), rec(9)].concat());
    }
    write(&cifar.join("test_batch.bin"), &rec(3));
    let c = Arc::new(open_cifar(&cifar, "train").unwrap());
    let out = run(&c, &LoaderConfig::new(Transform::Train(TrainTransform::new(24)), 1), 4, 0);
    assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 10);
    assert!(out.iter().all(|b| b.bad.is_empty()));
}
