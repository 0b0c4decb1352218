//! The feature cache: one folder per (model, weights, data split, taps).
//!
//! ```text
//! cache/
//!   manifest.json          what was extracted, how, and the shard layout
//!   shard-00000.arrow      Arrow IPC: `index` u32, `label` u32, one column per tap
//!   shard-00000.bad.json   images the loader skipped in that shard, where any
//!   …
//! ```
//! Each tap column (`stages.2:gap`) is a fixed-size list (polars `Array`) of `f32`, or of the
//! bits of an IEEE `f16` stored as `u16` when the cache is `f16` (polars 0.55 reads no `f16`
//! arrays), so a reader loads only the columns it asks for. Shard `k` holds dataset indices
//! `k·shard_rows ..` and is written whole through a temporary file and a rename: a shard file
//! that exists is complete, and an interrupted extraction resumes at the first missing one.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::ProbeError;
use crate::matrix::Matrix;
use crate::pool::TapSpec;
pub use exvit_common::Fnv;
use exvit_common::{write_atomic, write_bytes_atomic};

/// Storage precision of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision (round to nearest even), stored as its bits in `u16`: half the disk.
    F16,
}

impl std::str::FromStr for Dtype {
    type Err = ProbeError;
    fn from_str(s: &str) -> Result<Self, ProbeError> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            _ => Err(ProbeError::Config(format!("--dtype `{s}`: f32 or f16"))),
        }
    }
}

/// One tap column of a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedTap {
    /// The tap and pooling.
    #[serde(flatten)]
    pub spec: TapSpec,
    /// Channels of the tap.
    pub channels: usize,
    /// Feature width after pooling.
    pub dim: usize,
    /// Output stride of the tap (input side / map side).
    pub stride: usize,
}

/// What a cache holds and how it was made. Two extractions with the same manifest are the
/// same computation, which is what lets one resume the other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version.
    pub format: u32,
    /// The model (registry name or `.toml` path).
    pub model: String,
    /// The weights file, or `None` for the model at its seeded random initialisation.
    pub weights: Option<String>,
    /// FNV-1a 64 of the weights file's bytes (hex).
    pub weights_fnv: Option<String>,
    /// Seed of the random initialisation when there are no weights.
    pub init_seed: u64,
    /// The split's folder.
    pub data: String,
    /// The split's name.
    pub split: String,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Samples in the split.
    pub samples: usize,
    /// FNV-1a 64 of the split's (location, label) list (hex).
    pub dataset_fnv: String,
    /// Input side.
    pub resolution: usize,
    /// Shorter side after the eval resize (before the center crop).
    pub resize: usize,
    /// Resize filter.
    pub interpolation: String,
    /// Input mean.
    pub mean: [f32; 3],
    /// Input std.
    pub std: [f32; 3],
    /// BGR input.
    pub bgr: bool,
    /// The columns.
    pub taps: Vec<CachedTap>,
    /// Storage precision.
    pub dtype: Dtype,
    /// Rows per shard (the last shard may hold fewer).
    pub shard_rows: usize,
}

impl Manifest {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.samples.div_ceil(self.shard_rows)
    }

    /// The fields that differ from `other`, as `(field, self's, other's)`.
    pub fn differences(&self, other: &Manifest) -> Vec<(String, String, String)> {
        let a = serde_json::to_value(self).expect("manifest serialises");
        let b = serde_json::to_value(other).expect("manifest serialises");
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return Vec::new() };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.to_string(), b.get(k).map(|x| x.to_string()).unwrap_or_default()))
            .collect()
    }
}

/// Path of shard `k`.
pub fn shard_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("shard-{k:05}.arrow"))
}

fn bad_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("shard-{k:05}.bad.json"))
}

/// Writes `manifest.json` atomically.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), ProbeError> {
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(m).expect("manifest serialises");
    Ok(write_bytes_atomic(&path, text.as_bytes())?)
}

/// Rows of one shard, as the extractor collects them.
#[derive(Debug, Default)]
pub struct ShardRows {
    /// Dataset indices.
    pub indices: Vec<u32>,
    /// Labels.
    pub labels: Vec<u32>,
    /// One row-major block per tap column, `rows x dim`.
    pub features: Vec<Vec<f32>>,
    /// Skipped images: `(location, reason)`.
    pub bad: Vec<(String, String)>,
}

/// Writes shard `k` (and its list of skipped images) atomically.
pub fn write_shard(dir: &Path, k: usize, m: &Manifest, rows: ShardRows) -> Result<(), ProbeError> {
    let path = shard_path(dir, k);
    let n = rows.indices.len();
    let mut cols: Vec<Column> =
        vec![Column::new("index".into(), rows.indices), Column::new("label".into(), rows.labels)];
    for (tap, values) in m.taps.iter().zip(rows.features) {
        assert_eq!(values.len(), n * tap.dim, "shard {k}: column {} has the wrong length", tap.spec);
        let flat = match m.dtype {
            Dtype::F32 => Series::new("".into(), values),
            Dtype::F16 => {
                Series::new("".into(), values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect::<Vec<u16>>())
            }
        };
        let arr = flat
            .reshape_array(&[ReshapeDimension::new(n as i64), ReshapeDimension::new(tap.dim as i64)])
            .map_err(ProbeError::table(&path))?;
        cols.push(arr.with_name(tap.spec.column().into()).into_column());
    }
    let mut df = DataFrame::new(n, cols).map_err(ProbeError::table(&path))?;
    if !rows.bad.is_empty() {
        let bp = bad_path(dir, k);
        let text = serde_json::to_string_pretty(&rows.bad).expect("strings serialise");
        write_bytes_atomic(&bp, text.as_bytes())?;
    }
    Ok(write_atomic(&path, |f| IpcWriter::new(f).finish(&mut df).map_err(std::io::Error::other))?)
}

/// Features of some columns of a cache, loaded into memory.
#[derive(Debug, Clone)]
pub struct Features {
    /// The columns, side by side (in the order asked), one row per image.
    pub x: Matrix,
    /// Labels.
    pub labels: Vec<u32>,
    /// Dataset indices.
    pub indices: Vec<u32>,
    /// Width of each column asked for.
    pub dims: Vec<usize>,
}

/// An extracted cache, for reading.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Cache {
    /// Opens a complete cache.
    pub fn open(dir: &Path) -> Result<Cache, ProbeError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(ProbeError::io(&path))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ProbeError::Table {
            path: path.clone(),
            message: format!("not an exvit cache manifest: {e}"),
        })?;
        if manifest.shard_rows == 0 {
            return Err(ProbeError::Table { path, message: "`shard_rows` is 0".into() });
        }
        // Counted from the folder's listing, not by asking for each shard the manifest
        // declares: a corrupt `samples` could declare 2^60 of them (found by fuzzing).
        let total = manifest.shards();
        let present = std::fs::read_dir(dir)
            .map_err(ProbeError::io(dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("shard-")?.strip_suffix(".arrow")?.parse::<usize>().ok()
            })
            .filter(|&k| k < total)
            .count();
        if present < total {
            return Err(ProbeError::Incomplete { path: dir.to_path_buf(), missing: total - present, total });
        }
        Ok(Cache { dir: dir.to_path_buf(), manifest })
    }

    /// The column of `spec` (a `tap:pooling` or a bare tap name, if the cache holds one
    /// pooling of it).
    pub fn find(&self, spec: &str) -> Result<&CachedTap, ProbeError> {
        let exact = self.manifest.taps.iter().find(|t| t.spec.column() == spec);
        let by_tap: Vec<&CachedTap> = self.manifest.taps.iter().filter(|t| t.spec.tap == spec).collect();
        match (exact, by_tap.as_slice()) {
            (Some(t), _) => Ok(t),
            (None, [t]) => Ok(t),
            _ => Err(ProbeError::Tap(format!(
                "{}: no column `{spec}` (or several poolings of it); columns: {}",
                self.dir.display(),
                self.manifest.taps.iter().map(|t| t.spec.column()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Skipped images over all shards.
    pub fn bad(&self) -> Result<Vec<(String, String)>, ProbeError> {
        let mut out = Vec::new();
        for k in 0..self.manifest.shards() {
            let p = bad_path(&self.dir, k);
            if p.exists() {
                let text = std::fs::read_to_string(&p).map_err(ProbeError::io(&p))?;
                let v: Vec<(String, String)> = serde_json::from_str(&text)
                    .map_err(|e| ProbeError::Table { path: p.clone(), message: e.to_string() })?;
                out.extend(v);
            }
        }
        Ok(out)
    }

    /// Loads the columns `specs` (side by side), with labels and indices, shard by shard.
    pub fn read(&self, specs: &[&str]) -> Result<Features, ProbeError> {
        let taps: Vec<CachedTap> = specs.iter().map(|s| self.find(s).cloned()).collect::<Result<_, _>>()?;
        let dims: Vec<usize> = taps.iter().map(|t| t.dim).collect();
        let width = dims.iter().try_fold(0usize, |a, &d| a.checked_add(d)).ok_or_else(|| ProbeError::Table {
            path: self.dir.join("manifest.json"),
            message: format!("column widths {dims:?} overflow"),
        })?;
        let (mut data, mut labels, mut indices) = (Vec::new(), Vec::new(), Vec::new());
        let mut names: Vec<String> = vec!["index".into(), "label".into()];
        names.extend(taps.iter().map(|t| t.spec.column()));
        for k in 0..self.manifest.shards() {
            let path = shard_path(&self.dir, k);
            let file = File::open(&path).map_err(ProbeError::io(&path))?;
            // polars panics on some corrupt files (found by fuzzing): an error naming the file.
            let df =
                exvit_common::unwind::catch_panic(|| IpcReader::new(file).with_columns(Some(names.clone())).finish())
                    .map_err(|m| ProbeError::Table {
                        path: path.clone(),
                        message: format!("not a readable Arrow IPC shard (the reader failed: {m})"),
                    })?
                    .map_err(ProbeError::table(&path))?;
            let n = df.height();
            let col_u32 = |name: &str| -> Result<Vec<u32>, ProbeError> {
                let c = df.column(name).map_err(ProbeError::table(&path))?;
                let ca = c.u32().map_err(ProbeError::table(&path))?;
                Ok(ca.into_no_null_iter().collect())
            };
            indices.extend(col_u32("index")?);
            labels.extend(col_u32("label")?);
            let mut blocks = Vec::with_capacity(taps.len());
            for t in &taps {
                let name = t.spec.column();
                let c = df.column(&name).map_err(ProbeError::table(&path))?;
                let arr = c.array().map_err(ProbeError::table(&path))?;
                if arr.width() != t.dim {
                    return Err(ProbeError::Table {
                        path: path.clone(),
                        message: format!("column `{name}` has width {}, the manifest says {}", arr.width(), t.dim),
                    });
                }
                let inner = arr.get_inner();
                let values: Vec<f32> = match self.manifest.dtype {
                    Dtype::F32 => inner.f32().map_err(ProbeError::table(&path))?.into_no_null_iter().collect(),
                    Dtype::F16 => inner
                        .u16()
                        .map_err(ProbeError::table(&path))?
                        .into_no_null_iter()
                        .map(|b| half::f16::from_bits(b).to_f32())
                        .collect(),
                };
                if values.len() != n * t.dim {
                    return Err(ProbeError::Table {
                        path: path.clone(),
                        message: format!("column `{name}`: {} values for {n} rows of {}", values.len(), t.dim),
                    });
                }
                blocks.push(values);
            }
            for r in 0..n {
                for (b, &d) in blocks.iter().zip(&dims) {
                    data.extend_from_slice(&b[r * d..(r + 1) * d]);
                }
            }
        }
        let rows = labels.len();
        Ok(Features { x: Matrix::new(rows, width, data), labels, indices, dims })
    }
}
