//! Atomic file output: nothing half-written is ever left under the final name.

use std::fs::File;
use std::path::Path;

use crate::source::DataError;

/// Creates `dir/.name.tmp-PID` beside `path` (same file system, so the rename is atomic), lets
/// `write` fill it, then renames it to `path`. On any error the temporary file is removed.
pub(crate) fn write_atomic(path: &Path, write: impl FnOnce(File) -> Result<(), DataError>) -> Result<(), DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(|source| DataError::Io { path: tmp.clone(), source })?;
    let result = write(file).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
