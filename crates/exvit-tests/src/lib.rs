//! Helpers shared by the workspace-level tests in `tests/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

pub mod fuzz;
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

/// `exvit probe extract` arguments for the tiny model (`tests/fixtures/parity/tiny.toml`, seed
/// 3) over the split `data` into the cache `out`: `taps` at `resolution`, batch 4, 8 rows per
/// shard, one loader thread.
pub fn tiny_extract_args(data: &Path, out: &Path, taps: &str, resolution: usize) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let model = repo_root().join("tests/fixtures/parity/tiny.toml");
    let args = ["probe", "extract", "--model", &path(&model), "--seed", "3", "--data", &path(data), "--taps", taps];
    let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let rest = ["--resolution", &resolution.to_string(), "--batch", "4", "--shard-rows", "8", "--workers", "1"];
    v.extend(rest.iter().map(|a| a.to_string()));
    v.extend(["--out".to_string(), path(out)]);
    v
}

/// A tiny training run's config (the TOML variant `tests/fixtures/parity/tiny.toml`, 24 px,
/// batch 4, a checkpoint every 2 iterations, cvnets' recipe shortened to `epochs`) reading
/// `dir/data` and writing `out`; saved as `dir/<out's name>.toml`, whose path is returned.
pub fn tiny_run_config(dir: &Path, out: &Path, epochs: u64, workers: usize) -> PathBuf {
    let text = format!(
        r#"model = "{model}"
train_data = "{data}"
val_data = "{data}"
out = "{out}"
epochs = {epochs}
seed = 3
size = 24
batch = 4
workers = {workers}
eval_crop_pct = 1.0
checkpoint_every = 2
keep_last = 2

[recipe]
label_smoothing = 0.1
ema_momentum = 0.05

[recipe.schedule]
warmup_iters = 4
warmup_init_lr = 0.001
max_lr = 0.004
min_lr = 0.0002
max_epochs = {epochs}

[recipe.adamw]
beta1 = 0.9
beta2 = 0.999
eps = 0.00000001
weight_decay = 0.01
decay_norm_and_bias = true
"#,
        model = repo_root().join("tests/fixtures/parity/tiny.toml").display(),
        data = dir.join("data").display(),
        out = out.display()
    );
    let p = dir.join(format!("{}.toml", out.file_name().expect("a run directory name").to_string_lossy()));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
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
