//! Tidy result tables: `probes.parquet` (one row per probe) and `cka.parquet` (one row per
//! pair of feature sets). Writing appends to an existing table (read, extend, rewrite through a
//! temporary file and a rename), so several `exvit probe fit` calls build one table.

use std::path::Path;

use polars::prelude::*;

use crate::error::RunDirError;
use crate::parquet::{self, nums, strings as s, strs};
use crate::weights::WeightsRef;

/// One probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// Model (registry name or config path).
    pub model: String,
    /// The weights its features came from.
    pub weights: WeightsRef,
    /// Tap, or taps joined by `+` for a combination.
    pub tap: String,
    /// Pooling (joined by `+` for a combination).
    pub pooling: String,
    /// Feature width.
    pub dim: u32,
    /// Chosen weight decay.
    pub wd: f64,
    /// Top-1 (%) on the evaluation split.
    pub top1: f64,
    /// Top-5 (%).
    pub top5: f64,
    /// Training images.
    pub n_train: u32,
    /// Evaluation images.
    pub n_eval: u32,
    /// Seed of the held-out split.
    pub seed: u64,
    /// Wall time of the probe (selection included).
    pub seconds: f64,
}

impl ProbeRow {
    /// Whether the row probes a combination of taps (`a+b`).
    pub fn is_combination(&self) -> bool {
        self.tap.contains('+')
    }
}

/// Linear CKA between two feature sets over the same images.
#[derive(Debug, Clone, PartialEq)]
pub struct CkaRow {
    /// First model.
    pub model_a: String,
    /// Its weights.
    pub weights_a: WeightsRef,
    /// Its column (`tap:pooling`).
    pub tap_a: String,
    /// Second model.
    pub model_b: String,
    /// Its weights.
    pub weights_b: WeightsRef,
    /// Its column.
    pub tap_b: String,
    /// Images.
    pub n: u32,
    /// Linear CKA.
    pub cka: f64,
}

/// Appends `rows` to the probes table at `path`.
pub fn write_probes(path: &Path, rows: &[ProbeRow]) -> Result<(), RunDirError> {
    let df = DataFrame::new(
        rows.len(),
        vec![
            s("model", rows.iter().map(|r| r.model.clone())),
            s("weights", rows.iter().map(|r| r.weights.to_string())),
            s("tap", rows.iter().map(|r| r.tap.clone())),
            s("pooling", rows.iter().map(|r| r.pooling.clone())),
            Column::new("dim".into(), rows.iter().map(|r| r.dim).collect::<Vec<_>>()),
            Column::new("wd".into(), rows.iter().map(|r| r.wd).collect::<Vec<_>>()),
            Column::new("top1".into(), rows.iter().map(|r| r.top1).collect::<Vec<_>>()),
            Column::new("top5".into(), rows.iter().map(|r| r.top5).collect::<Vec<_>>()),
            Column::new("n_train".into(), rows.iter().map(|r| r.n_train).collect::<Vec<_>>()),
            Column::new("n_eval".into(), rows.iter().map(|r| r.n_eval).collect::<Vec<_>>()),
            Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<_>>()),
            Column::new("seconds".into(), rows.iter().map(|r| r.seconds).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| RunDirError::format(path)(e.to_string()))?;
    parquet::append(path, df)
}

/// Appends `rows` to the CKA table at `path`.
pub fn write_cka(path: &Path, rows: &[CkaRow]) -> Result<(), RunDirError> {
    let df = DataFrame::new(
        rows.len(),
        vec![
            s("model_a", rows.iter().map(|r| r.model_a.clone())),
            s("weights_a", rows.iter().map(|r| r.weights_a.to_string())),
            s("tap_a", rows.iter().map(|r| r.tap_a.clone())),
            s("model_b", rows.iter().map(|r| r.model_b.clone())),
            s("weights_b", rows.iter().map(|r| r.weights_b.to_string())),
            s("tap_b", rows.iter().map(|r| r.tap_b.clone())),
            Column::new("n".into(), rows.iter().map(|r| r.n).collect::<Vec<_>>()),
            Column::new("cka".into(), rows.iter().map(|r| r.cka).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| RunDirError::format(path)(e.to_string()))?;
    parquet::append(path, df)
}

/// Reads a probes table.
pub fn read_probes(path: &Path) -> Result<Vec<ProbeRow>, RunDirError> {
    let df = parquet::read(path)?;
    let (model, weights, tap, pooling) =
        (strs(&df, path, "model")?, strs(&df, path, "weights")?, strs(&df, path, "tap")?, strs(&df, path, "pooling")?);
    let dim = nums::<UInt32Type>(&df, path, "dim")?;
    let wd = nums::<Float64Type>(&df, path, "wd")?;
    let top1 = nums::<Float64Type>(&df, path, "top1")?;
    let top5 = nums::<Float64Type>(&df, path, "top5")?;
    let n_train = nums::<UInt32Type>(&df, path, "n_train")?;
    let n_eval = nums::<UInt32Type>(&df, path, "n_eval")?;
    let seed = nums::<UInt64Type>(&df, path, "seed")?;
    let seconds = nums::<Float64Type>(&df, path, "seconds")?;
    Ok((0..df.height())
        .map(|i| ProbeRow {
            model: model[i].clone(),
            weights: WeightsRef::from(weights[i].as_str()),
            tap: tap[i].clone(),
            pooling: pooling[i].clone(),
            dim: dim[i],
            wd: wd[i],
            top1: top1[i],
            top5: top5[i],
            n_train: n_train[i],
            n_eval: n_eval[i],
            seed: seed[i],
            seconds: seconds[i],
        })
        .collect())
}

/// Reads a CKA table.
pub fn read_cka(path: &Path) -> Result<Vec<CkaRow>, RunDirError> {
    let df = parquet::read(path)?;
    let (ma, wa, ta) = (strs(&df, path, "model_a")?, strs(&df, path, "weights_a")?, strs(&df, path, "tap_a")?);
    let (mb, wb, tb) = (strs(&df, path, "model_b")?, strs(&df, path, "weights_b")?, strs(&df, path, "tap_b")?);
    let n = nums::<UInt32Type>(&df, path, "n")?;
    let cka = nums::<Float64Type>(&df, path, "cka")?;
    Ok((0..df.height())
        .map(|i| CkaRow {
            model_a: ma[i].clone(),
            weights_a: WeightsRef::from(wa[i].as_str()),
            tap_a: ta[i].clone(),
            model_b: mb[i].clone(),
            weights_b: WeightsRef::from(wb[i].as_str()),
            tap_b: tb[i].clone(),
            n: n[i],
            cka: cka[i],
        })
        .collect())
}
