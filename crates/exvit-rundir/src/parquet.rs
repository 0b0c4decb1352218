//! Parquet through polars: atomic writes and column readers that name the file and the column.

use std::fs::File;
use std::io::Cursor;
use std::path::Path;

use polars::io::parquet::read::FileMetadata;
use polars_buffer::Buffer;
use polars_parquet::parquet::page::CompressedPage;
use polars_parquet::parquet::read::get_page_iterator;

use exvit_common::{write_atomic, FileError};
use polars::prelude::*;

use crate::error::RunDirError;

/// Reads a whole Parquet file.
pub(crate) fn read(path: &Path) -> Result<DataFrame, RunDirError> {
    read_parquet(path)
}

/// The most rows a Parquet file of `bytes` bytes may declare: 8 per byte. exvit's tables hold a
/// distinct string or number per row (paths, iterations, taps), which no encoding stores in
/// under a bit; a larger count is a corrupt footer, and polars would allocate for it before
/// reading a page (an abort, found by fuzzing).
fn max_rows(bytes: u64) -> u64 {
    bytes.saturating_mul(8).saturating_add(64)
}

/// Reads a whole Parquet file written by exvit (a table of its own: metrics, predictions,
/// probes, CKA, dataset manifests), defended against corrupt files: polars' reader panics on
/// some (contained, [`exvit_common::unwind`]) and aborts the process on a footer that declares
/// absurd row counts (refused here first, [`max_rows`]). Errors name the file.
pub fn read_parquet(path: &Path) -> Result<DataFrame, RunDirError> {
    let bad = RunDirError::format(path);
    let file = File::open(path).map_err(FileError::at(path))?;
    let bytes = file.metadata().map_err(FileError::at(path))?.len();
    let mut reader = ParquetReader::new(file);
    let unreadable = |m: String| bad(format!("not a readable Parquet file (the reader failed: {m})"));
    let (rows, groups) = exvit_common::unwind::catch_panic(|| {
        reader
            .get_metadata()
            .map(|m| (m.num_rows as u64, m.row_groups.iter().map(|g| g.num_rows() as u64).collect::<Vec<_>>()))
    })
    .map_err(unreadable)?
    .map_err(|e| bad(e.to_string()))?;
    if rows > max_rows(bytes) || groups.iter().try_fold(0u64, |a, &g| a.checked_add(g)) != Some(rows) {
        return Err(bad(format!(
            "corrupt Parquet footer: {rows} rows declared (row groups: {groups:?}) in a file of {bytes} bytes"
        )));
    }
    let metadata = reader.get_metadata().map_err(|e| bad(e.to_string()))?.clone();
    exvit_common::unwind::catch_panic(|| check_pages(path, &metadata, bytes, rows)).map_err(unreadable)??;
    exvit_common::unwind::catch_panic(|| reader.finish()).map_err(unreadable)?.map_err(|e| bad(e.to_string()))
}

/// Reads every page header of every column chunk: each page's value count must be one a file
/// of `bytes` bytes can hold (at most 8 per byte; a negative count read as a huge one made
/// polars abort on a bitmap of 2^61 bytes, found by fuzzing).
fn check_pages(path: &Path, metadata: &FileMetadata, bytes: u64, rows: u64) -> Result<(), RunDirError> {
    let bad = RunDirError::format(path);
    let data = Buffer::from_vec(std::fs::read(path).map_err(FileError::at(path))?);
    let cap = max_rows(bytes);
    for group in &metadata.row_groups {
        for column in group.parquet_columns() {
            let pages = get_page_iterator(column, Cursor::new(data.clone()), Vec::new(), bytes as usize)
                .map_err(|e| bad(format!("column `{}`: {e}", column.descriptor().path_in_schema.join("."))))?;
            for page in pages {
                let values = match page.map_err(|e| bad(format!("corrupt page: {e}")))? {
                    CompressedPage::Data(p) => p.num_values() as u64,
                    // A dictionary's size is its buffer's, read above within the page limit.
                    CompressedPage::Dict(_) => 0,
                };
                if values > cap {
                    return Err(bad(format!(
                        "corrupt Parquet page: {values} values declared in a file of {bytes} bytes ({rows} rows)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Writes `df` to `path` atomically.
pub(crate) fn write(path: &Path, df: &mut DataFrame) -> Result<(), RunDirError> {
    Ok(write_atomic(path, |w| ParquetWriter::new(w).finish(df).map(drop).map_err(std::io::Error::other))?)
}

/// A string column from `v`.
pub(crate) fn strings(name: &str, v: impl Iterator<Item = String>) -> Column {
    Column::new(name.into(), v.collect::<Vec<_>>())
}

/// A numeric column from `v`.
pub(crate) fn numbers<T>(name: &str, v: impl Iterator<Item = T>) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::new(name.into(), v.collect::<Vec<_>>())
}

/// A binary column from `v` (one byte string per row).
pub(crate) fn binary(name: &str, v: impl Iterator<Item = Vec<u8>>) -> Column {
    let v: Vec<Vec<u8>> = v.collect();
    BinaryChunked::from_iter_values(name.into(), v.iter().map(Vec::as_slice)).into_column()
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

/// A binary column (a null is an error naming the column).
pub(crate) fn bytes(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<Vec<u8>>, RunDirError> {
    let err = |e: PolarsError| RunDirError::format(path)(format!("column `{name}`: {e}"));
    let ca = df.column(name).map_err(err)?.binary().map_err(err)?.clone();
    ca.iter()
        .map(|v| {
            v.map(<[u8]>::to_vec).ok_or_else(|| RunDirError::format(path)(format!("column `{name}`: a null value")))
        })
        .collect()
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
