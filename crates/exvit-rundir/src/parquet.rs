//! Parquet through polars: atomic writes and column readers that name the file and the column.

use std::fs::File;
use std::path::Path;

use exvit_common::{write_atomic, FileError};
use polars::prelude::*;

use crate::error::RunDirError;

/// Reads a whole Parquet file.
pub(crate) fn read(path: &Path) -> Result<DataFrame, RunDirError> {
    let file = File::open(path).map_err(FileError::at(path))?;
    ParquetReader::new(file).finish().map_err(|e| RunDirError::format(path)(e.to_string()))
}

/// Writes `df` to `path` atomically.
pub(crate) fn write(path: &Path, df: &mut DataFrame) -> Result<(), RunDirError> {
    Ok(write_atomic(path, |w| ParquetWriter::new(w).finish(df).map(drop).map_err(std::io::Error::other))?)
}

/// Whether `df` has a column `name`.
pub(crate) fn has(df: &DataFrame, name: &str) -> bool {
    df.get_column_names().iter().any(|c| c.as_str() == name)
}

/// A string column (nulls read as "").
pub(crate) fn strs(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<String>, RunDirError> {
    let err = |e: PolarsError| RunDirError::format(path)(format!("column `{name}`: {e}"));
    let c = df.column(name).map_err(err)?;
    let ca = c.str().map_err(err)?;
    Ok(ca.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

/// A numeric column cast to `T`; a null is an error naming the column.
pub(crate) fn nums<T: PolarsNumericType>(
    df: &DataFrame,
    path: &Path,
    name: &str,
) -> Result<Vec<T::Native>, RunDirError> {
    let err = |e: PolarsError| RunDirError::format(path)(format!("column `{name}`: {e}"));
    let c = df.column(name).map_err(err)?;
    let c = c.cast(&T::get_static_dtype()).map_err(err)?;
    let ca: &ChunkedArray<T> = c.as_materialized_series().unpack::<T>().map_err(err)?;
    ca.iter().map(|v| v.ok_or_else(|| RunDirError::format(path)(format!("column `{name}`: a null value")))).collect()
}

/// Appends `df` to the table at `path` (same columns), or creates it; the folder is created.
pub(crate) fn append(path: &Path, mut df: DataFrame) -> Result<(), RunDirError> {
    if path.exists() {
        let old = read(path)?;
        if old.schema() != df.schema() {
            return Err(RunDirError::format(path)("exists with other columns; write to another file".into()));
        }
        df = old.vstack(&df).map_err(|e| RunDirError::format(path)(e.to_string()))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(FileError::at(parent))?;
    }
    write(path, &mut df)
}
