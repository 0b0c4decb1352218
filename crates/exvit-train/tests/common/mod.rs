//! Helpers shared by the engine's tests: a small generated dataset and the tiny MobileViT.

use std::path::{Path, PathBuf};

use exvit_zoo::{resolve_model, MobileVitConfig};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_mobilevit() -> MobileVitConfig {
    resolve_model(repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(), 3).unwrap()
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// 3 classes × `per_class` 40x40 PNGs: noise tinted red, green or blue.
pub fn tinted_dataset(tag: &str, per_class: u32) -> PathBuf {
    let root = std::env::temp_dir().join(format!("exvit-{tag}-{}", std::process::id())).join("train");
    let _ = std::fs::remove_dir_all(&root);
    for c in 0..3usize {
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let noise = ((x * 31 + y * 17 + i * 7) % 64) as u8;
                let mut p = [noise; 3];
                p[c] = p[c].saturating_add(150);
                image::Rgb(p)
            });
            let mut buf = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img).write_to(&mut buf, image::ImageFormat::Png).unwrap();
            write(&root.join(format!("c{c}/{i}.png")), &buf.into_inner());
        }
    }
    root
}
