//! The crate's error: every variant names the file (and the column or field) at fault.

use std::path::PathBuf;

use exvit_common::FileError;

/// What can go wrong reading or writing a run directory or a table.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The file system.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file that exists but cannot be decoded (names the column or field).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl RunDirError {
    pub(crate) fn format(path: impl Into<PathBuf>) -> impl Fn(String) -> RunDirError {
        let path = path.into();
        move |message| RunDirError::Format { path: path.clone(), message }
    }
}
