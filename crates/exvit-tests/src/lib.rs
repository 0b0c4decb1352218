//! Helpers shared by the workspace-level tests in `tests/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

pub mod parity;

/// Every tensor of a safetensors file as `(key, raw bytes)`, sorted by key: two runs' weights
/// compare bit for bit with `==`.
pub fn tensor_bytes(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut t: Vec<_> = st.tensors().into_iter().map(|(k, v)| (k, v.data().to_vec())).collect();
    t.sort();
    t
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// A tensor read from a fixture, as f64 values with its shape.
#[derive(Debug, Clone)]
pub struct FixtureTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, converted to f64 (from f32, f64 or i64).
    pub values: Vec<f64>,
}

/// A safetensors fixture: tensors and metadata.
pub struct Fixture {
    /// Tensors by name.
    pub tensors: HashMap<String, FixtureTensor>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

impl Fixture {
    /// Reads `path`, panicking with the path on error.
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                d => panic!("{}: tensor {name} has unsupported dtype {d:?}", path.display()),
            };
            tensors.insert(name, FixtureTensor { shape: view.shape().to_vec(), values });
        }
        Fixture { tensors, metadata: meta.metadata().clone().unwrap_or_default() }
    }

    /// The tensor `name`, panicking with its name when absent.
    pub fn get(&self, name: &str) -> &FixtureTensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no tensor `{name}`"))
    }

    /// The metadata entry `key`.
    pub fn meta(&self, key: &str) -> &str {
        self.metadata.get(key).unwrap_or_else(|| panic!("fixture has no metadata `{key}`"))
    }
}
