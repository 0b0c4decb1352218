//! Helpers shared by the engine's tests: a small generated dataset and the tiny MobileViT.

use std::path::PathBuf;

use exvit_zoo::{resolve_model, MobileVitConfig};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_mobilevit() -> MobileVitConfig {
    resolve_model(repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(), 3).unwrap()
}

/// 3 classes × `per_class` 40x40 PNGs: noise tinted red, green or blue
/// ([`exvit_data::synthetic::write_tinted_dataset`]).
pub fn tinted_dataset(tag: &str, per_class: u32) -> PathBuf {
    let root = std::env::temp_dir().join(format!("exvit-{tag}-{}", std::process::id())).join("train");
    let _ = std::fs::remove_dir_all(&root);
    exvit_data::synthetic::write_tinted_dataset(&root, per_class, 40, 40).unwrap()
}
