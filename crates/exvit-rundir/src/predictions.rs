//! `predictions.parquet`: per-image results of a run's latest evaluation.

use std::path::Path;

use polars::prelude::*;

use crate::error::RunDirError;
use crate::parquet;

/// Per-image results of the latest evaluation of a run: for each validation image, in dataset
/// order, its label and the rank of that label in the model's scores (0 = top-1 correct), and
/// the same for the EMA. Two runs evaluated on the same split can be compared image by image
/// (the report's paired bootstrap).
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// The epoch evaluated (0-based).
    pub epoch: u64,
    /// Labels.
    pub labels: Vec<u32>,
    /// The model's rank of each label (`u32::MAX`: a NaN score).
    pub ranks: Vec<u32>,
    /// The EMA's, when the run keeps one.
    pub ema_ranks: Option<Vec<u32>>,
}

/// Writes `p` to `path` atomically.
pub fn write_predictions(p: &Predictions, path: &Path) -> Result<(), RunDirError> {
    let err = RunDirError::format(path);
    let n = p.labels.len();
    if p.ranks.len() != n || p.ema_ranks.as_ref().is_some_and(|r| r.len() != n) {
        return Err(err(format!("{n} labels but {} ranks", p.ranks.len())));
    }
    let mut cols = vec![
        Column::new("image".into(), (0..n as u32).collect::<Vec<_>>()),
        Column::new("epoch".into(), vec![p.epoch; n]),
        Column::new("label".into(), p.labels.clone()),
        Column::new("rank".into(), p.ranks.clone()),
    ];
    if let Some(r) = &p.ema_ranks {
        cols.push(Column::new("ema_rank".into(), r.clone()));
    }
    let mut df = DataFrame::new_infer_height(cols).map_err(|e| err(e.to_string()))?;
    parquet::write(path, &mut df)
}

/// Reads `predictions.parquet`; names the file and the column on bad input.
pub fn read_predictions(path: &Path) -> Result<Predictions, RunDirError> {
    let df = parquet::read(path)?;
    let u32s = |name: &str| parquet::nums::<UInt32Type>(&df, path, name);
    let epoch = parquet::nums::<UInt64Type>(&df, path, "epoch")?.first().copied().unwrap_or(0);
    let ema_ranks = if parquet::has(&df, "ema_rank") { Some(u32s("ema_rank")?) } else { None };
    Ok(Predictions { epoch, labels: u32s("label")?, ranks: u32s("rank")?, ema_ranks })
}
