//! The crate's error: every variant names the file, sample or field at fault.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::decode::DecodeError;

/// Errors of dataset discovery and reading.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or folder cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder is not a dataset exvit knows.
    #[error("{path}: {message}")]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// A sample could not be decoded.
    #[error("{path}: {source}")]
    Decode {
        /// The sample's path (for tar members, `shard.tar/member`).
        path: String,
        /// Why.
        source: DecodeError,
    },
    /// A setting out of range or unknown (names the field).
    #[error("{field}: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file written atomically.
    #[error(transparent)]
    File(#[from] exvit_common::FileError),
    /// The loader could not start its threads.
    #[error("the data loader could not start: {0}")]
    Loader(String),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}
