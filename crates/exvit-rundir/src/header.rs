//! What a reader needs of a run's `config.toml`, read leniently.

use std::path::Path;

use serde::Deserialize;

use crate::error::RunDirError;
use exvit_common::FileError;

/// The run's identity as a report needs it. Read from `config.toml` with every other key
/// ignored, so a run written by an older or newer exvit (a key added, a recipe field renamed)
/// stays readable; the full text is kept for display.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunHeader {
    /// The model: a zoo name or a model TOML.
    pub model: String,
    /// The seed (0 when the config has none, as the engine's default).
    #[serde(default)]
    pub seed: u64,
    /// Epochs planned, where recorded.
    #[serde(default)]
    pub epochs: Option<u64>,
    /// The config file as written.
    #[serde(skip)]
    pub text: String,
}

impl RunHeader {
    /// Reads `path` (a run's `config.toml`); names the file and the key on bad input.
    pub fn read(path: &Path) -> Result<Self, RunDirError> {
        let text = std::fs::read_to_string(path).map_err(FileError::at(path))?;
        let mut h: RunHeader = toml::from_str(&text).map_err(|e| RunDirError::format(path)(e.to_string()))?;
        h.text = text;
        Ok(h)
    }
}
