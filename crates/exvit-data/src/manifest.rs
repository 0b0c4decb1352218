//! Manifests: one Parquet row per sample (path, label, width, height, bytes, format, status),
//! so that later runs need not walk the tree again. Written atomically (temporary file, then
//! rename).

use std::path::Path;

use polars::prelude::*;

use crate::check::{Record, Status};
use crate::source::DataError;
use exvit_common::write_atomic;

fn polars_err(path: &Path) -> impl Fn(PolarsError) -> DataError + '_ {
    move |e| DataError::Layout { path: path.to_path_buf(), message: format!("manifest: {e}") }
}

/// The records as a polars DataFrame.
pub fn to_frame(records: &[Record]) -> PolarsResult<DataFrame> {
    let status: Vec<String> = records
        .iter()
        .map(|r| match &r.status {
            Status::Ok => "ok".to_string(),
            Status::Bad(why) => why.clone(),
        })
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new("path".into(), records.iter().map(|r| r.path.as_str()).collect::<Vec<_>>()),
        Column::new("label".into(), records.iter().map(|r| r.label).collect::<Vec<_>>()),
        Column::new("width".into(), records.iter().map(|r| r.width).collect::<Vec<_>>()),
        Column::new("height".into(), records.iter().map(|r| r.height).collect::<Vec<_>>()),
        Column::new("bytes".into(), records.iter().map(|r| r.bytes).collect::<Vec<_>>()),
        Column::new("format".into(), records.iter().map(|r| r.format.as_str()).collect::<Vec<_>>()),
        Column::new("status".into(), status),
    ])
}

/// Writes the manifest to `path` atomically.
pub fn write_manifest(records: &[Record], path: &Path) -> Result<(), DataError> {
    let mut df = to_frame(records).map_err(polars_err(path))?;
    Ok(write_atomic(path, |w| ParquetWriter::new(w).finish(&mut df).map(drop).map_err(std::io::Error::other))?)
}

/// Reads a manifest back.
pub fn read_manifest(path: &Path) -> Result<DataFrame, DataError> {
    // Guarded against corrupt files (polars panics or aborts on some; found by fuzzing).
    exvit_rundir::read_parquet(path).map_err(|e| match e {
        exvit_rundir::RunDirError::Format { message, .. } => {
            DataError::Layout { path: path.to_path_buf(), message: format!("manifest: {message}") }
        }
        other => DataError::Layout { path: path.to_path_buf(), message: format!("manifest: {other}") },
    })
}
