//! The JSON header of a safetensors file, read without its tensor data: what a class count or
//! a parameter count needs, at no cost for a large checkpoint.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::atomic::FileError;

/// Why a header cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The file system.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a safetensors file.
    #[error("{}: not a safetensors file: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The header's entries by key (`__metadata__` included), each a JSON object with `dtype`,
/// `shape` and `data_offsets`. A length field past the file's end, or over 100 MiB, is an error.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, serde_json::Value>, HeaderError> {
    let bad = |message: String| HeaderError::Format { path: path.to_path_buf(), message };
    let mut f = std::fs::File::open(path).map_err(FileError::at(path))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| bad(format!("no header length: {e}")))?;
    let n = u64::from_le_bytes(n);
    let len = f.metadata().map_err(FileError::at(path))?.len();
    if n > 100 << 20 || n + 8 > len {
        return Err(bad(format!("a header of {n} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(FileError::at(path))?;
    serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))
}

/// The shape of tensor `key` in a header, where it is there and well formed.
pub fn shape_of(header: &BTreeMap<String, serde_json::Value>, key: &str) -> Option<Vec<u64>> {
    header.get(key)?.get("shape")?.as_array()?.iter().map(|d| d.as_u64()).collect()
}
