//! Atomic file output: nothing half-written is ever left under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file system error on a named path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file or folder.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// A closure that wraps an [`std::io::Error`] with `path`.
    pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.into();
        move |source| FileError { path, source }
    }
}

/// `dir/.name.tmp-PID`: beside the target, so the rename stays on one file system, and named
/// by the process, so two processes never share one.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Renames a finished temporary file onto `path`; on failure removes it.
pub fn commit(tmp: &Path, path: &Path) -> Result<(), FileError> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        FileError { path: path.to_path_buf(), source }
    })
}

/// Creates the temporary file beside `path`, lets `write` fill it (buffered), flushes it and
/// renames it to `path`. On any error the temporary file is removed and the error names `path`
/// (or the temporary file, when that cannot be created).
///
/// Errors of other kinds (a Parquet encoder's, a serialiser's) travel as
/// [`std::io::Error::other`], whose message is kept.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), FileError> {
    try_write_atomic(path, |w| write(w).map_err(FileError::at(path)))
}

/// [`write_atomic`] for a writer whose errors are its own (`E`, which must hold a
/// [`FileError`] for the file system's): for example a packer that reads other files while it
/// writes. The temporary file is removed on any error.
pub fn try_write_atomic<E: From<FileError>>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(FileError::at(&tmp))?;
    let mut w = BufWriter::new(file);
    let written =
        write(&mut w).and_then(|()| w.flush().map_err(|e| FileError { path: path.to_path_buf(), source: e }.into()));
    drop(w);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    Ok(commit(&tmp, path)?)
}

/// [`write_atomic`] of a byte slice.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("exvit-common-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let d = dir("fail");
        let p = d.join("table.parquet");
        write_bytes_atomic(&p, b"old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert_eq!(e.path, p);
        assert!(e.to_string().contains("encoder failed"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "temporary file left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_folder_is_named() {
        let d = dir("missing");
        let p = d.join("no/such/file");
        let e = write_bytes_atomic(&p, b"x").unwrap_err();
        assert!(e.path.starts_with(d.join("no/such")), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
