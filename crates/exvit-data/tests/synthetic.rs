//! The demo dataset: deterministic, and its classes differ in the way its design says (texture
//! classes in fine structure everywhere, layout classes only in where their shape is).

use exvit_data::synthetic::{demo_image, write_demo_dataset, DemoSpec, DEMO_CLASSES};

const S: usize = 32;

fn grey(img: &[u8]) -> Vec<f64> {
    img.chunks(3).map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0).collect()
}

/// Mean absolute difference between vertical and between horizontal neighbours.
fn fine_energy(g: &[f64]) -> (f64, f64) {
    let (mut v, mut h) = (0.0, 0.0);
    for y in 0..S - 1 {
        for x in 0..S - 1 {
            v += (g[(y + 1) * S + x] - g[y * S + x]).abs();
            h += (g[y * S + x + 1] - g[y * S + x]).abs();
        }
    }
    let n = ((S - 1) * (S - 1)) as f64;
    (v / n, h / n)
}

/// Row (0 = top) where the deviation from the image's median brightness is largest, on average.
fn deviation_centroid_row(g: &[f64]) -> f64 {
    let mut sorted = g.to_vec();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    let (mut wsum, mut ysum) = (0.0, 0.0);
    for y in 0..S {
        for x in 0..S {
            let w = (g[y * S + x] - med).abs().powi(2);
            wsum += w;
            ysum += w * y as f64;
        }
    }
    ysum / wsum
}

#[test]
fn images_are_deterministic_and_differ_between_samples() {
    assert_eq!(demo_image(3, S, 0, &[1, 3, 7]), demo_image(3, S, 0, &[1, 3, 7]));
    assert_ne!(demo_image(3, S, 0, &[1, 3, 7]), demo_image(3, S, 0, &[1, 3, 8]));
    assert_ne!(demo_image(3, S, 0, &[1, 3, 7]), demo_image(3, S, 1, &[1, 3, 7]));
}

#[test]
fn texture_and_layout_classes_differ_as_designed() {
    let mean_over = |class: usize, f: &dyn Fn(&[f64]) -> f64| -> f64 {
        (0..40u64).map(|i| f(&grey(&demo_image(class, S, 0, &[1, class as u64, i])))).sum::<f64>() / 40.0
    };
    // Horizontal stripes: large differences between rows, small between columns; vertical: the reverse.
    let (hv, hh) = (mean_over(0, &|g| fine_energy(g).0), mean_over(0, &|g| fine_energy(g).1));
    let (vv, vh) = (mean_over(1, &|g| fine_energy(g).0), mean_over(1, &|g| fine_energy(g).1));
    assert!(hv > 2.0 * hh && vh > 2.0 * vv, "stripes: h ({hv}, {hh}) v ({vv}, {vh})");
    // Every texture class has more fine energy than every layout class.
    let fine = |c: usize| {
        mean_over(c, &|g| {
            let (v, h) = fine_energy(g);
            v + h
        })
    };
    let tex_min = (0..4).map(fine).fold(f64::INFINITY, f64::min);
    let lay_max = (4..8).map(fine).fold(0.0, f64::max);
    assert!(tex_min > 1.5 * lay_max, "texture {tex_min} vs layout {lay_max}");
    // The two blob classes share their fine statistics but not where the blob is.
    let (top, bottom) = (fine(4), fine(5));
    assert!((top - bottom).abs() < 0.15 * top, "blob classes' fine energy {top} vs {bottom}");
    let (rt, rb) = (mean_over(4, &deviation_centroid_row), mean_over(5, &deviation_centroid_row));
    assert!(rt < 13.0 && rb > 19.0, "blob centroid rows: top {rt}, bottom {rb}");
}

#[test]
fn writes_an_image_folder_that_opens_as_a_dataset() {
    let root = std::env::temp_dir().join(format!("exvit-demo-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let spec = DemoSpec { size: 24, train_per_class: 3, val_per_class: 2, seed: 5 };
    let (train, val) = write_demo_dataset(&root, spec).unwrap();
    let ds = exvit_data::open_path(&train, "train").unwrap();
    assert_eq!(ds.classes, DEMO_CLASSES.map(String::from).to_vec());
    assert_eq!(ds.samples.len(), 24);
    assert_eq!(exvit_data::open_path(&val, "val").unwrap().samples.len(), 16);
    let again = std::env::temp_dir().join(format!("exvit-demo-data2-{}", std::process::id()));
    write_demo_dataset(&again, spec).unwrap();
    let a = std::fs::read(train.join("7_layout_bar_v/00002.png")).unwrap();
    let b = std::fs::read(again.join("train/7_layout_bar_v/00002.png")).unwrap();
    assert_eq!(a, b, "the same spec writes the same bytes");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&again);
}
