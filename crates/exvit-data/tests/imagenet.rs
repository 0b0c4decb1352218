//! ImageNet's validation layouts: flat files labelled by Kaggle's CSV or by the devkit's ground
//! truth through meta.mat (fixture: tools/data/make_fixtures.py, `make_devkit`, written by scipy).

use std::path::PathBuf;

use exvit_data::classes::imagenet_index;
use exvit_data::matfile::read_mat;
use exvit_data::source::devkit_id_to_label;
use exvit_data::{open_split, Layout, Location};

fn devkit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data/devkit")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-imagenet-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("val")).unwrap();
    d
}

fn touch_val(root: &std::path::Path, n: usize) {
    for i in 1..=n {
        std::fs::write(root.join(format!("val/ILSVRC2012_val_{i:08}.JPEG")), b"").unwrap();
    }
}

#[test]
fn scipy_meta_mat_is_read() {
    let vars = read_mat(&std::fs::read(devkit().join("meta.mat")).unwrap()).unwrap();
    let (name, synsets) = &vars[0];
    assert_eq!(name, "synsets");
    assert_eq!(synsets.len(), 5);
    assert_eq!(synsets.field(0, "WNID").and_then(|v| v.as_str()), Some("n04579432"));
    assert_eq!(synsets.field(3, "ILSVRC2012_ID").and_then(|v| v.as_number()), Some(1001.0));
    // ILSVRC2012_ID -> sorted-wnid index; the non-leaf (1001, not a class) is left out.
    let map = devkit_id_to_label(&devkit().join("meta.mat")).unwrap();
    assert_eq!(map.len(), 4);
    assert_eq!(map[&1], imagenet_index("n04579432").unwrap());
    assert_eq!(map[&2], 0, "n01440764 is class 0 in sorted order");
    assert_eq!(map[&3], imagenet_index("n02123045").unwrap());
    assert_eq!(map[&4], imagenet_index("n03000134").unwrap());
}

#[test]
fn devkit_ground_truth_is_mapped_through_meta_mat() {
    let root = tmp("devkit");
    touch_val(&root, 4);
    std::fs::copy(devkit().join("meta.mat"), root.join("meta.mat")).unwrap();
    // Devkit ids of images 1..4 (in meta.mat's order, not the sorted-wnid order).
    std::fs::write(root.join("ILSVRC2012_validation_ground_truth.txt"), "2\n1\n4\n2\n").unwrap();
    let ds = open_split(&root.join("val")).unwrap();
    assert_eq!(ds.layout, Layout::ImageNetFlatVal);
    assert_eq!(ds.classes.len(), 1000);
    let label_of = |n: usize| {
        let name = format!("ILSVRC2012_val_{n:08}.JPEG");
        ds.samples.iter().find(|s| matches!(&s.location, Location::File(p) if p.ends_with(&name))).unwrap().label
    };
    assert_eq!(label_of(1), 0);
    assert_eq!(label_of(2), imagenet_index("n04579432").unwrap());
    assert_eq!(label_of(3), imagenet_index("n03000134").unwrap());
    assert_eq!(label_of(4), 0);
}

#[test]
fn kaggle_csv_labels_flat_validation_images() {
    let root = tmp("kaggle");
    touch_val(&root, 2);
    std::fs::write(
        root.join("LOC_val_solution.csv"),
        "ImageId,PredictionString\nILSVRC2012_val_00000002,n02123045 1 2 3 4 n02123045 5 6 7 8\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n",
    )
    .unwrap();
    let ds = open_split(&root.join("val")).unwrap();
    let labels: Vec<usize> = ds.samples.iter().map(|s| s.label).collect();
    assert_eq!(labels, [1, imagenet_index("n02123045").unwrap()]);
    // Without any labels the error says what to provide.
    let bare = tmp("bare");
    touch_val(&bare, 1);
    let e = open_split(&bare.join("val")).unwrap_err().to_string();
    assert!(e.contains("LOC_val_solution.csv") && e.contains("meta.mat"), "{e}");
}
