//! `metrics.parquet`: one row per optimiser step and per evaluation.

use std::path::Path;
use std::str::FromStr;

use polars::prelude::*;

use crate::error::RunDirError;
use crate::parquet;

/// What a metrics row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricKind {
    /// One optimiser step (`"train"` on disk).
    #[default]
    Train,
    /// One evaluation at an epoch's end (`"eval"`).
    Eval,
}

impl MetricKind {
    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Train => "train",
            MetricKind::Eval => "eval",
        }
    }
}

impl FromStr for MetricKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(MetricKind::Train),
            "eval" => Ok(MetricKind::Eval),
            other => Err(format!("unknown kind `{other}` (expected `train` or `eval`)")),
        }
    }
}

/// One row of `metrics.parquet`. Fields that do not apply to the row's kind are 0 (NaN for an
/// EMA a run does not keep).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricRow {
    /// A step or an evaluation.
    pub kind: MetricKind,
    /// Epoch (0-based).
    pub epoch: u64,
    /// Global iteration (after the step, or at the evaluation).
    pub iteration: u64,
    /// LR of the step.
    pub lr: f64,
    /// Train: the step's loss; eval: the model's loss.
    pub loss: f64,
    /// Eval: model top-1 (%).
    pub top1: f64,
    /// Eval: model top-5.
    pub top5: f64,
    /// Eval: EMA top-1.
    pub ema_top1: f64,
    /// Eval: EMA top-5.
    pub ema_top5: f64,
    /// Train: images per second.
    pub img_per_s: f64,
    /// Train: resolution.
    pub resolution: u64,
    /// Train: images in the step.
    pub batch: u64,
}

fn frame(rows: &[MetricRow]) -> PolarsResult<DataFrame> {
    let col_f = |name: &str, f: fn(&MetricRow) -> f64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    let col_u = |name: &str, f: fn(&MetricRow) -> u64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>());
    DataFrame::new_infer_height(vec![
        Column::new("kind".into(), rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>()),
        col_u("epoch", |r| r.epoch),
        col_u("iteration", |r| r.iteration),
        col_f("lr", |r| r.lr),
        col_f("loss", |r| r.loss),
        col_f("top1", |r| r.top1),
        col_f("top5", |r| r.top5),
        col_f("ema_top1", |r| r.ema_top1),
        col_f("ema_top5", |r| r.ema_top5),
        col_f("img_per_s", |r| r.img_per_s),
        col_u("resolution", |r| r.resolution),
        col_u("batch", |r| r.batch),
    ])
}

/// Writes `rows` to `path` atomically.
pub fn write_metrics(rows: &[MetricRow], path: &Path) -> Result<(), RunDirError> {
    let mut df = frame(rows).map_err(|e| RunDirError::format(path)(e.to_string()))?;
    parquet::write(path, &mut df)
}

/// Reads `metrics.parquet`; names the file and the column on bad input.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, RunDirError> {
    let df = parquet::read(path)?;
    let f = |name: &str| parquet::nums::<Float64Type>(&df, path, name);
    let u = |name: &str| parquet::nums::<UInt64Type>(&df, path, name);
    let kind = parquet::strs(&df, path, "kind")?
        .iter()
        .map(|k| k.parse::<MetricKind>().map_err(|e| RunDirError::format(path)(format!("column `kind`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (epoch, iteration, lr, loss, top1, top5, et1, et5, ips, res, batch) = (
        u("epoch")?,
        u("iteration")?,
        f("lr")?,
        f("loss")?,
        f("top1")?,
        f("top5")?,
        f("ema_top1")?,
        f("ema_top5")?,
        f("img_per_s")?,
        u("resolution")?,
        u("batch")?,
    );
    Ok((0..kind.len())
        .map(|i| MetricRow {
            kind: kind[i],
            epoch: epoch[i],
            iteration: iteration[i],
            lr: lr[i],
            loss: loss[i],
            top1: top1[i],
            top5: top5[i],
            ema_top1: et1[i],
            ema_top5: et5[i],
            img_per_s: ips[i],
            resolution: res[i],
            batch: batch[i],
        })
        .collect())
}
