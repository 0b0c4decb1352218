//! Shared helpers: fixtures, the tiny MobileViT (plain and with ExShortcuts), a generated
//! ImageFolder.
#![allow(dead_code)]

use std::path::PathBuf;

use exvit_zoo::{resolve_model, ExShortcutSpec, MobileVitConfig};
use safetensors::SafeTensors;

pub type B = burn_flex::Flex;
pub type AD = burn::backend::Autodiff<burn_flex::Flex>;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny(classes: usize) -> MobileVitConfig {
    resolve_model(repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(), classes).unwrap()
}

/// The tiny model with ExShortcuts on stages 2 and 3.
pub fn tiny_ex(classes: usize) -> MobileVitConfig {
    let mut c = tiny(classes);
    c.name = "tiny_ex".into();
    c.exshortcuts = vec![ExShortcutSpec { stage: 2, channels: 8 }, ExShortcutSpec { stage: 3, channels: 12 }];
    c
}

pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn load(rel: &str) -> Fixture {
        let p = repo().join(rel);
        Fixture { bytes: std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) }
    }

    fn view(&self, name: &str) -> (Vec<usize>, safetensors::Dtype, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no {name}"));
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, dt, data) = self.view(name);
        assert_eq!(dt, safetensors::Dtype::F32, "{name}");
        (shape, data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    pub fn f64(&self, name: &str) -> f64 {
        let (_, dt, data) = self.view(name);
        assert_eq!(dt, safetensors::Dtype::F64, "{name}");
        f64::from_le_bytes(data[..8].try_into().unwrap())
    }

    pub fn labels(&self, name: &str) -> Vec<u32> {
        let (_, dt, data) = self.view(name);
        assert_eq!(dt, safetensors::Dtype::I64, "{name}");
        data.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
    }

    pub fn matrix(&self, name: &str) -> exvit_probe::Matrix {
        let (shape, v) = self.f32(name);
        exvit_probe::Matrix::new(shape[0], shape[1], v)
    }
}

/// 3 classes × `per_class` 48x40 PNGs: noise tinted red, green or blue
/// ([`exvit_data::synthetic::write_tinted_dataset`]).
pub fn tinted_dataset(tag: &str, per_class: u32) -> PathBuf {
    let root = std::env::temp_dir().join(format!("exvit-probe-{tag}-{}", std::process::id())).join("train");
    let _ = std::fs::remove_dir_all(&root);
    exvit_data::synthetic::write_tinted_dataset(&root, per_class, 48, 40).unwrap()
}
