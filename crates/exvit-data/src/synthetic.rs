//! The demo's embedded dataset: small images made procedurally and deterministically, so that
//! some classes differ only in **fine texture** and others only in **global layout**.
//!
//! Every image starts from the same nuisance: a random base colour, a random smooth
//! illumination gradient and pixel noise (so colour and brightness carry no class). Then:
//!
//! | class | what tells it apart |
//! |---|---|
//! | `texture_hstripes` | 2-px horizontal stripes over the whole image (random phase, amplitude) |
//! | `texture_vstripes` | 2-px vertical stripes |
//! | `texture_checker` | a 1-px checkerboard |
//! | `texture_speckle` | sparse single-pixel speckles |
//! | `layout_blob_top` | one soft disc (brighter or darker) in the top third |
//! | `layout_blob_bottom` | the same disc in the bottom third |
//! | `layout_bar_h` | a wide soft horizontal bar |
//! | `layout_bar_v` | a wide soft vertical bar |
//!
//! A texture class is visible in every small window, so a globally pooled early feature (small
//! receptive field) can tell it; the two blob classes have the same local statistics and differ
//! only in *where* the disc is, which a global average of an early map erases but a late stage
//! (receptive field ≈ the image) keeps. So early and late taps should differ, in opposite
//! directions for the two families: the design the probe curve is meant to expose.

use std::path::{Path, PathBuf};

use crate::rng::Rng;
use crate::source::DataError;

/// Class names, in label order (the digit keeps ImageFolder's sorted order equal to it).
pub const DEMO_CLASSES: [&str; 8] = [
    "0_texture_hstripes",
    "1_texture_vstripes",
    "2_texture_checker",
    "3_texture_speckle",
    "4_layout_blob_top",
    "5_layout_blob_bottom",
    "6_layout_bar_h",
    "7_layout_bar_v",
];

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    /// Image side.
    pub size: usize,
    /// Training images per class.
    pub train_per_class: usize,
    /// Validation images per class.
    pub val_per_class: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for DemoSpec {
    /// 32x32, 160 + 50 per class, seed 0.
    fn default() -> Self {
        DemoSpec { size: 32, train_per_class: 160, val_per_class: 50, seed: 0 }
    }
}

/// One image of class `class`, as RGB bytes (`size x size x 3`), a pure function of the seed
/// and its key.
pub fn demo_image(class: usize, size: usize, seed: u64, key: &[u64]) -> Vec<u8> {
    let mut r = Rng::keyed(seed, key);
    let s = size as f64;
    let base = [r.uniform(60.0, 190.0), r.uniform(60.0, 190.0), r.uniform(60.0, 190.0)];
    let (gx, gy) = (r.uniform(-25.0, 25.0), r.uniform(-25.0, 25.0));
    let amp = r.uniform(18.0, 36.0);
    let phase = r.below(2) as usize;
    let sign = if r.coin(0.5) { 1.0 } else { -1.0 };
    let contrast = r.uniform(45.0, 80.0) * sign;
    // Layout geometry.
    let radius = r.uniform(0.20, 0.26) * s;
    let cx = r.uniform(0.3, 0.7) * s;
    let cy = match class {
        4 => r.uniform(0.18, 0.30) * s,
        5 => r.uniform(0.70, 0.82) * s,
        _ => r.uniform(0.3, 0.7) * s,
    };
    let half = r.uniform(0.10, 0.16) * s;
    let mut out = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let mut v = gx * (fx / s - 0.5) + gy * (fy / s - 0.5) + r.uniform(-10.0, 10.0);
            v += match class {
                0 => amp * if (y + phase).is_multiple_of(2) { 1.0 } else { -1.0 },
                1 => amp * if (x + phase).is_multiple_of(2) { 1.0 } else { -1.0 },
                2 => amp * if (x + y + phase).is_multiple_of(2) { 1.0 } else { -1.0 },
                3 if r.coin(0.15) => 2.5 * amp,
                4 | 5 => {
                    let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
                    contrast * (1.0 / (1.0 + ((d - radius) / 1.5).exp()))
                }
                6 => contrast * (1.0 / (1.0 + (((fy - cy).abs() - half) / 1.5).exp())),
                7 => contrast * (1.0 / (1.0 + (((fx - cx).abs() - half) / 1.5).exp())),
                _ => 0.0,
            };
            for c in 0..3 {
                out[(y * size + x) * 3 + c] = (base[c] + v).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Writes the demo dataset as an ImageFolder of PNGs: `root/{train,val}/<class>/<i>.png`.
/// Returns the two split folders. Deterministic: the same spec gives the same files.
pub fn write_demo_dataset(root: &Path, spec: DemoSpec) -> Result<(PathBuf, PathBuf), DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    for (split, n, tag) in [("train", spec.train_per_class, 1u64), ("val", spec.val_per_class, 2u64)] {
        for (c, name) in DEMO_CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            for i in 0..n {
                let rgb = demo_image(c, spec.size, spec.seed, &[tag, c as u64, i as u64]);
                let img =
                    image::RgbImage::from_raw(spec.size as u32, spec.size as u32, rgb).expect("size x size x 3 bytes");
                write_png(&dir.join(format!("{i:05}.png")), &img)?;
            }
        }
    }
    Ok((root.join("train"), root.join("val")))
}

/// Writes `img` as a PNG, atomically.
fn write_png(path: &Path, img: &image::RgbImage) -> Result<(), DataError> {
    Ok(exvit_common::write_atomic(path, |w| {
        img.write_to(w, image::ImageFormat::Png).map_err(|e| std::io::Error::other(e.to_string()))
    })?)
}

/// A tiny colour dataset for tests and examples: an ImageFolder at `root` with classes `c0`,
/// `c1`, `c2`, each `per_class` `width`x`height` PNGs of a fixed noise pattern tinted red,
/// green or blue (so the class is linearly decodable from the mean colour). Deterministic.
/// Returns `root`.
///
/// # Example
/// ```
/// let root = std::env::temp_dir().join(format!("exvit-tinted-doc-{}", std::process::id()));
/// exvit_data::synthetic::write_tinted_dataset(&root, 4, 40, 40).unwrap();
/// let ds = exvit_data::open_path(&root, "train").unwrap();
/// assert_eq!((ds.classes.len(), ds.samples.len()), (3, 12));
/// # std::fs::remove_dir_all(&root).unwrap();
/// ```
pub fn write_tinted_dataset(root: &Path, per_class: u32, width: u32, height: u32) -> Result<PathBuf, DataError> {
    for c in 0..3usize {
        let dir = root.join(format!("c{c}"));
        std::fs::create_dir_all(&dir).map_err(|source| DataError::Io { path: dir.clone(), source })?;
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(width, height, |x, y| {
                let noise = ((x * 31 + y * 17 + i * 7) % 64) as u8;
                let mut p = [noise; 3];
                p[c] = p[c].saturating_add(150);
                image::Rgb(p)
            });
            write_png(&dir.join(format!("{i}.png")), &img)?;
        }
    }
    Ok(root.to_path_buf())
}
