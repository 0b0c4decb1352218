//! The crate's error type: every variant names the file, tap or field at fault.

use std::path::PathBuf;

/// What can go wrong in taps, caches, probes and CKA.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// File system error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A table or cache file cannot be read or written.
    #[error("{path}: {message}")]
    Table {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A cache was made with other settings than the ones asked for (resume refused).
    #[error("{path}: the cache was made with {found}; asked: {asked}. Use another folder or the same settings")]
    CacheMismatch {
        /// The cache's manifest.
        path: PathBuf,
        /// The cache's values of the fields that differ (`field = value, …`).
        found: String,
        /// The values asked for.
        asked: String,
    },
    /// A cache is not complete (an extraction still to finish or resume).
    #[error("{path}: the cache is incomplete ({missing} of {total} shards missing); run `exvit probe extract` again with the same arguments to finish it")]
    Incomplete {
        /// The cache folder.
        path: PathBuf,
        /// Missing shards.
        missing: usize,
        /// All shards.
        total: usize,
    },
    /// The cache folder is being written by another process.
    #[error(transparent)]
    Lock(#[from] exvit_common::LockError),
    /// A tap, pooling or combination that does not exist.
    #[error("{0}")]
    Tap(String),
    /// Bad settings (names the field).
    #[error("{0}")]
    Config(String),
    /// The data pipeline failed.
    #[error(transparent)]
    Data(#[from] exvit_data::DataError),
    /// The model failed.
    #[error(transparent)]
    Zoo(#[from] exvit_zoo::ZooError),
    /// Weights failed to load.
    #[error(transparent)]
    Weights(#[from] exvit_zoo::WeightsError),
    /// An unknown tap name.
    #[error(transparent)]
    UnknownTap(#[from] exvit_zoo::UnknownTap),
    /// A file written atomically, or a fingerprinted file.
    #[error(transparent)]
    File(#[from] exvit_common::FileError),
    /// A result table.
    #[error(transparent)]
    RunDir(#[from] exvit_rundir::RunDirError),
    /// Interrupted (Ctrl-C): finished shards are kept.
    #[error("interrupted after {done} of {total} shards; run the same command again to resume")]
    Interrupted {
        /// Shards written.
        done: usize,
        /// All shards.
        total: usize,
    },
}

impl ProbeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ProbeError {
        let path = path.into();
        move |source| ProbeError::Io { path, source }
    }

    pub(crate) fn table(path: impl Into<PathBuf>) -> impl FnOnce(polars::prelude::PolarsError) -> ProbeError {
        let path = path.into();
        move |e| ProbeError::Table { path, message: e.to_string() }
    }
}
