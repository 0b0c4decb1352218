//! `provenance.json`: where a run's numbers came from.

use std::path::Path;

use exvit_common::{write_bytes_atomic, FileError};
use serde::{Deserialize, Serialize};

use crate::error::RunDirError;

/// A run's provenance, written by its writer (rank 0) when each process ends. Every field is
/// optional on reading (`#[serde(default)]`), so files from older exvit versions, which lack
/// some, stay readable; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The commit the binary was built from (not the one checked out when the run ended).
    pub git_commit: Option<String>,
    /// Whether that tree had uncommitted changes (`None`: unknown, e.g. built outside git).
    pub git_dirty: Option<bool>,
    /// FNV-1a of the run's `config.toml`, as 16 hex digits.
    pub config_hash: Option<String>,
    /// The run's seed.
    pub seed: Option<u64>,
    /// exvit's version.
    pub exvit_version: Option<String>,
    /// burn's version.
    pub burn_version: Option<String>,
    /// The CPU model.
    pub cpu: Option<String>,
    /// Threads available to the process.
    pub threads: Option<usize>,
    /// Data-parallel replicas.
    pub replicas: Option<usize>,
    /// Wall time of the process that wrote this file (a resumed run: its last process).
    pub wall_seconds_this_process: Option<f64>,
    /// Epochs completed.
    pub epoch: Option<u64>,
    /// Iterations completed.
    pub iteration: Option<u64>,
}

impl Provenance {
    /// The CPU model of this machine (`/proc/cpuinfo`), where it can be read.
    pub fn this_cpu() -> Option<String> {
        let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    }
}

/// Writes `p` to `path` atomically, as pretty JSON.
pub fn write_provenance(p: &Provenance, path: &Path) -> Result<(), RunDirError> {
    let mut text = serde_json::to_string_pretty(p).map_err(|e| RunDirError::format(path)(e.to_string()))?;
    text.push('\n');
    Ok(write_bytes_atomic(path, text.as_bytes())?)
}

/// Reads `provenance.json`; names the file on bad input.
pub fn read_provenance(path: &Path) -> Result<Provenance, RunDirError> {
    let text = std::fs::read_to_string(path).map_err(FileError::at(path))?;
    serde_json::from_str(&text).map_err(|e| RunDirError::format(path)(e.to_string()))
}
