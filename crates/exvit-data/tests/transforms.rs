//! Transforms against torchvision 0.29.2 on PIL images (Pillow 13.0.0), from
//! tools/data/make_transform_fixtures.py: resized_crop and eval Resize + CenterCrop must match
//! pixel for pixel (exvit reimplements Pillow's resampling exactly); RandomResizedCrop's box
//! statistics must match torchvision's within sampling error; flip and normalisation are
//! checked by hand.

use std::path::PathBuf;

use exvit_data::resize::{resize, Filter, ResizeScratch, RgbView};
use exvit_data::rng::Rng;
use exvit_data::transform::{
    apply, random_resized_crop_box, to_chw, CropBox, EvalTransform, Input, Normalize, Scratch, StageTimes,
    TrainTransform, Transform,
};
use exvit_data::{decode_rgb, RgbImage};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data")
}

fn load_refs() -> Vec<u8> {
    std::fs::read(fixtures().join("transforms.safetensors")).unwrap()
}

fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap()
}

fn filter(name: &str) -> Filter {
    name.parse().unwrap()
}

/// f32 CHW in [0, 1] back to packed u8 RGB (exact: v = k / 255).
fn chw_to_rgb(t: &[f32], s: usize) -> Vec<u8> {
    let mut v = vec![0u8; s * s * 3];
    for c in 0..3 {
        for i in 0..s * s {
            v[i * 3 + c] = (t[c * s * s + i] * 255.0).round() as u8;
        }
    }
    v
}

#[test]
fn resized_crop_matches_torchvision_exactly() {
    let bytes = load_refs();
    let refs = SafeTensors::deserialize(&bytes).unwrap();
    let mut n = 0;
    for (key, want) in refs.tensors() {
        let Some(rest) = key.strip_prefix("rrc/") else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        let (file, mode, geo) = (parts[0], parts[1], parts[2]);
        let g: Vec<usize> = geo.split('_').map(|v| v.parse().unwrap()).collect();
        let (top, left, h, w, s) = (g[0], g[1], g[2], g[3], g[4]);
        let img = decode_rgb(&image_bytes(file), 1 << 24).unwrap();
        let view = RgbView::new(&img.data, img.width as usize, img.height as usize).crop(left, top, w, h);
        let mut out = Vec::new();
        resize(view, s, s, filter(mode), &mut ResizeScratch::default(), &mut out);
        assert_eq!(want.shape(), [s, s, 3], "{key}");
        assert_eq!(out, want.data(), "{key}: resized_crop differs from torchvision");
        n += 1;
    }
    assert_eq!(n, 12);
}

/// The whole train path, JPEG window decode included, equals torchvision's resized_crop of the
/// box it drew (exact mode, no DCT scaling), flipped when it drew a flip.
#[test]
fn train_transform_is_decode_crop_resize_flip() {
    let bytes = image_bytes("transform.jpg");
    let full = decode_rgb(&bytes, 1 << 24).unwrap();
    let t = TrainTransform { filter: Filter::Bicubic, ..TrainTransform::new(24) };
    let mut flips = 0;
    for i in 0..40u64 {
        let mut out = vec![0f32; 3 * 24 * 24];
        apply(
            &Transform::Train(t),
            Input::Encoded(&bytes),
            24,
            1 << 24,
            &mut Rng::keyed(3, &[0, i]),
            &Normalize::default(),
            &mut Scratch::default(),
            &mut out,
            &mut StageTimes::default(),
        )
        .unwrap();
        // Redraw the same box and flip from the same key.
        let mut rng = Rng::keyed(3, &[0, i]);
        let b = random_resized_crop_box(&mut rng, 97, 73, t.scale, t.ratio);
        let flip = rng.coin(0.5);
        flips += flip as usize;
        let view = RgbView::new(&full.data, 97, 73).crop(b.left, b.top, b.width, b.height);
        let mut want = Vec::new();
        resize(view, 24, 24, Filter::Bicubic, &mut ResizeScratch::default(), &mut want);
        if flip {
            want = (0..24 * 24)
                .map(|p| (p / 24, 23 - p % 24))
                .flat_map(|(y, x)| want[(y * 24 + x) * 3..][..3].to_vec())
                .collect();
        }
        assert_eq!(chw_to_rgb(&out, 24), want, "sample {i}: box {b:?} flip {flip}");
        // The same through the already-decoded path (CIFAR-style input).
        let mut out2 = vec![0f32; 3 * 24 * 24];
        let rgb = RgbImage { width: 97, height: 73, data: full.data.clone() };
        apply(
            &Transform::Train(t),
            Input::Rgb(rgb),
            24,
            1 << 24,
            &mut Rng::keyed(3, &[0, i]),
            &Normalize::default(),
            &mut Scratch::default(),
            &mut out2,
            &mut StageTimes::default(),
        )
        .unwrap();
        assert_eq!(out, out2, "sample {i}: JPEG window path vs decoded path");
    }
    assert!((8..=32).contains(&flips), "{flips} flips in 40");
}

#[test]
fn eval_resize_and_center_crop_match_torchvision_exactly() {
    let bytes = load_refs();
    let refs = SafeTensors::deserialize(&bytes).unwrap();
    let mut n = 0;
    for (key, want) in refs.tensors() {
        let Some(rest) = key.strip_prefix("eval/") else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        let (file, mode, geo) = (parts[0], parts[1], parts[2]);
        let (r, c) = geo.split_once('_').unwrap();
        let (r, c): (usize, usize) = (r.parse().unwrap(), c.parse().unwrap());
        let t = Transform::Eval(EvalTransform { resize: r, crop: c, filter: filter(mode) });
        let mut out = vec![0f32; 3 * c * c];
        let file_bytes = image_bytes(file);
        let res = apply(
            &t,
            Input::Encoded(&file_bytes),
            c,
            1 << 24,
            &mut Rng::keyed(0, &[]),
            &Normalize::default(),
            &mut Scratch::default(),
            &mut out,
            &mut StageTimes::default(),
        );
        if want.shape()[0] != c || want.shape()[1] != c {
            // torchvision pads a crop larger than the image; exvit refuses it.
            assert!(res.is_err(), "{key}");
            continue;
        }
        res.unwrap();
        assert_eq!(chw_to_rgb(&out, c), want.data(), "{key}: eval transform differs from torchvision");
        n += 1;
    }
    assert!(n >= 21, "{n}");
}

#[test]
fn random_resized_crop_statistics_match_torchvision() {
    let bytes = load_refs();
    let refs = SafeTensors::deserialize(&bytes).unwrap();
    for (w, h) in [(500usize, 375usize), (1000, 100), (64, 64)] {
        let want = refs.tensor(&format!("rrc_stats/{w}x{h}")).unwrap();
        let want: Vec<f64> = want.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        let n = 20_000;
        let mut rng = Rng::keyed(11, &[w as u64, h as u64]);
        let stats: Vec<[f64; 4]> = (0..n)
            .map(|_| {
                let CropBox { top, left, height, width } =
                    random_resized_crop_box(&mut rng, w, h, (0.08, 1.0), (0.75, 4.0 / 3.0));
                assert!(top + height <= h && left + width <= w && height > 0 && width > 0);
                [
                    (height * width) as f64 / (w * h) as f64,
                    (width as f64 / height as f64).ln(),
                    (left as f64 + width as f64 / 2.0) / w as f64,
                    (top as f64 + height as f64 / 2.0) / h as f64,
                ]
            })
            .collect();
        for k in 0..4 {
            let mean = stats.iter().map(|s| s[k]).sum::<f64>() / n as f64;
            let std = (stats.iter().map(|s| (s[k] - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            let (wm, ws) = (want[k], want[4 + k]);
            // Two independent means of n draws: their difference has std ≈ ws·√(2/n); allow 5σ.
            let tol = 5.0 * ws.max(1e-6) * (2.0 / n as f64).sqrt();
            assert!(
                (mean - wm).abs() <= tol.max(1e-9),
                "{w}x{h} stat {k}: mean {mean} vs torchvision {wm} (tol {tol})"
            );
            assert!((std - ws).abs() <= 0.05 * ws + 1e-9, "{w}x{h} stat {k}: std {std} vs torchvision {ws}");
        }
    }
}

#[test]
fn to_tensor_flips_normalises_and_orders_channels() {
    // 2x1 image: pixel 0 = (10, 20, 30), pixel 1 = (40, 50, 60).
    let rgb = [10u8, 20, 30, 40, 50, 60];
    let mut out = [0f32; 6];
    to_chw(&rgb, 2, 1, false, &Normalize::default(), &mut out);
    assert_eq!(out, [10.0 / 255.0, 40.0 / 255.0, 20.0 / 255.0, 50.0 / 255.0, 30.0 / 255.0, 60.0 / 255.0]);
    to_chw(&rgb, 2, 1, true, &Normalize::default(), &mut out);
    assert_eq!(out, [40.0 / 255.0, 10.0 / 255.0, 50.0 / 255.0, 20.0 / 255.0, 60.0 / 255.0, 30.0 / 255.0]);
    let n = Normalize { bgr: true, ..Normalize::imagenet() };
    to_chw(&rgb, 2, 1, false, &n, &mut out);
    let f = |v: f32, c: usize| (v / 255.0 - n.mean[c]) / n.std[c];
    let want = [f(30.0, 2), f(60.0, 2), f(20.0, 1), f(50.0, 1), f(10.0, 0), f(40.0, 0)];
    for (a, b) in out.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{out:?} vs {want:?}");
    }
}

/// Fast decoding changes pixels (DCT scaling, fast IDCT, plain upsampling instead of Pillow's
/// full decode + resize), so it is off by default; when on, it stays close to the exact result.
#[test]
fn fast_decode_is_close_to_exact() {
    let bytes = image_bytes("transform.jpg");
    let exact = TrainTransform { scale: (0.9, 1.0), ..TrainTransform::new(24) };
    let fast = TrainTransform { fast_decode: true, ..exact };
    let mut worst = 0f32;
    for i in 0..10u64 {
        let mut a = vec![0f32; 3 * 24 * 24];
        let mut b = a.clone();
        for (t, o) in [(exact, &mut a), (fast, &mut b)] {
            apply(
                &Transform::Train(t),
                Input::Encoded(&bytes),
                24,
                1 << 24,
                &mut Rng::keyed(5, &[i]),
                &Normalize::default(),
                &mut Scratch::default(),
                o,
                &mut StageTimes::default(),
            )
            .unwrap();
        }
        let mean = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
        worst = worst.max(mean);
    }
    // Crops of ≥ 87 px to 24 px decode at 1/2 (or 1/4); the images differ, but little.
    assert!(worst > 0.0 && worst < 0.06, "mean |exact - dct-scaled| = {worst}");
}

/// The SIMD path (16 pixels at a time, on AVX2 machines) and the scalar tail give the same bits
/// as torchvision's formula, `(v / 255 - mean) / std` in f32, with flips and BGR, at widths
/// that are and are not multiples of 16.
#[test]
fn to_tensor_simd_equals_the_formula_bit_for_bit() {
    for (w, h) in [(37usize, 5usize), (32, 3), (15, 2)] {
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 73 + 11) % 256) as u8).collect();
        for norm in [Normalize::default(), Normalize::imagenet(), Normalize { bgr: true, ..Normalize::imagenet() }] {
            for flip in [false, true] {
                let mut out = vec![0f32; w * h * 3];
                to_chw(&rgb, w, h, flip, &norm, &mut out);
                for y in 0..h {
                    for x in 0..w {
                        for c in 0..3 {
                            let v = rgb[(y * w + x) * 3 + c] as f32;
                            let want = (v / 255.0 - norm.mean[c]) / norm.std[c];
                            let plane = if norm.bgr { 2 - c } else { c };
                            let dx = if flip { w - 1 - x } else { x };
                            let got = out[plane * w * h + y * w + dx];
                            assert_eq!(got.to_bits(), want.to_bits(), "{w}x{h} flip {flip} {norm:?} at ({x},{y}) c{c}");
                        }
                    }
                }
            }
        }
    }
}
