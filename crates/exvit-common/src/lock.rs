//! One writer per folder: an advisory lock that names its holder.
//!
//! A run directory or a feature cache written by two processes at once ends up with files from
//! both (two `metrics.parquet` histories, shards of two models). [`DirLock::acquire`] takes an
//! exclusive `flock` on `FOLDER/.exvit.lock` and writes who holds it (pid, host, command, start
//! time) into that file; a second writer is refused with [`LockError::Held`], which names the
//! holder. The kernel drops the lock when its process ends however it ends (SIGKILL, a crash,
//! power loss), so a lock is never left stale: a file that still names a holder when the lock is
//! free was left by a process that died while writing, and the next writer takes it over with a
//! warning and removes that process's unfinished temporary files (`.NAME.tmp-PID`, see
//! [`crate::atomic::tmp_path`]). Dropping the [`DirLock`] empties the file and releases it.
//!
//! `flock` is per host: on a network file system shared by several machines it may not exclude
//! a writer on another machine.
//!
//! # Example
//! ```
//! use exvit_common::lock::{DirLock, LockError};
//!
//! let dir = std::env::temp_dir().join(format!("exvit-lock-doc-{}", std::process::id()));
//! let held = DirLock::acquire(&dir, "my run").unwrap();
//! // A second writer, even in this process, is refused and told who holds the folder.
//! match DirLock::acquire(&dir, "another run") {
//!     Err(LockError::Held { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
//!     other => panic!("{other:?}"),
//! }
//! drop(held);
//! let again = DirLock::acquire(&dir, "my run").unwrap();
//! assert!(again.taken_over().is_none()); // released cleanly, nothing to take over
//! # drop(again);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::atomic::FileError;

/// The lock file's name inside the folder it guards.
pub const LOCK_FILE: &str = ".exvit.lock";

/// Who holds (or held) a folder, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// What it is doing (e.g. `exvit train`), as the holder described itself.
    pub what: String,
    /// When it took the lock, Unix seconds.
    pub since: u64,
}

impl Holder {
    fn me(what: &str) -> Holder {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        // The label and the command line, so the refused user can find the process.
        let mut command: String = std::env::args().collect::<Vec<_>>().join(" ");
        if command.chars().count() > 200 {
            command = command.chars().take(200).chain("…".chars()).collect();
        }
        let what = format!("{what}: {command}").replace('\n', " ");
        Holder { pid: std::process::id(), host, what, since: now() }
    }

    fn to_text(&self) -> String {
        format!("pid {}\nhost {}\nwhat {}\nsince {}\n", self.pid, self.host, self.what, self.since)
    }

    /// Parses a lock file's text; `None` when it is empty (released) or not a holder's.
    fn parse(text: &str) -> Option<Holder> {
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).map(str::to_string))
        };
        Some(Holder {
            pid: field("pid")?.trim().parse().ok()?,
            host: field("host").unwrap_or_default(),
            what: field("what").unwrap_or_default(),
            since: field("since").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        })
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if !self.host.is_empty() {
            write!(f, " on {}", self.host)?;
        }
        if !self.what.is_empty() {
            write!(f, " ({})", self.what)?;
        }
        if self.since > 0 {
            write!(f, ", since {} s ago", now().saturating_sub(self.since))?;
        }
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another writer holds it.
    #[error(
        "{}: in use by {holder}; two writers would mix their files: wait for it to finish or stop it (its lock: {})",
        dir.display(),
        lock.display()
    )]
    Held {
        /// The folder.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The holder, as its lock file names it.
        holder: Holder,
    },
    /// The folder or its lock file could not be created or read.
    #[error(transparent)]
    File(#[from] FileError),
}

/// An exclusive lock on a folder, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    taken_over: Option<Holder>,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for this process, describing the holder as `what`
    /// (shown to a second writer, followed by this process's command line). Refuses with [`LockError::Held`] when another writer holds
    /// it (another process, or another [`DirLock`] of this one). A lock file left by a process
    /// that died is taken over: a warning is logged and that process's temporary files in
    /// `dir` (and its immediate subfolders) are removed.
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, LockError> {
        std::fs::create_dir_all(dir).map_err(FileError::at(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(FileError::at(&path))?;
        let mut text = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut text);
                // Between its open and its write, a fresh holder's file is still empty.
                let holder = Holder::parse(&text).unwrap_or(Holder {
                    pid: 0,
                    host: String::new(),
                    what: "a process that is starting".into(),
                    since: 0,
                });
                return Err(LockError::Held { dir: dir.to_path_buf(), lock: path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(FileError { path, source: e }.into()),
        }
        file.read_to_string(&mut text).map_err(FileError::at(&path))?;
        let taken_over = Holder::parse(&text);
        if let Some(dead) = &taken_over {
            let removed = remove_temporaries(dir, dead.pid);
            tracing::warn!(
                "{}: taking over the lock of {dead}, which ended without releasing it; \
                 {removed} unfinished temporary file(s) of it removed",
                dir.display()
            );
        }
        let me = Holder::me(what);
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.to_text().as_bytes()))
            .and_then(|()| file.sync_data());
        written.map_err(FileError::at(&path))?;
        Ok(DirLock { file, path, taken_over })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dead holder this lock was taken over from, if any.
    pub fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Empty: released cleanly (a file that names a holder while unlocked means it died).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Removes `.NAME.tmp-PID` files of process `pid` in `dir` and its immediate subfolders;
/// returns how many.
fn remove_temporaries(dir: &Path, pid: u32) -> usize {
    let suffix = format!(".tmp-{pid}");
    let mut removed = 0;
    let visit = |d: &Path, descend: bool, removed: &mut usize, subdirs: &mut Vec<PathBuf>| {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = e.file_type().ok();
            if kind.is_some_and(|k| k.is_dir()) {
                if descend {
                    subdirs.push(e.path());
                }
            } else if name.starts_with('.') && name.ends_with(&suffix) && std::fs::remove_file(e.path()).is_ok() {
                *removed += 1;
            }
        }
    };
    let mut subdirs = Vec::new();
    visit(dir, true, &mut removed, &mut subdirs);
    for s in subdirs {
        visit(&s, false, &mut removed, &mut Vec::new());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("exvit-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named() {
        let d = dir("held");
        let held = DirLock::acquire(&d, "training").unwrap();
        let e = DirLock::acquire(&d, "training").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("in use by pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("(training: "), "{msg}");
        assert!(msg.starts_with(&d.display().to_string()), "{msg}");
        drop(held);
        let again = DirLock::acquire(&d, "exvit train").unwrap();
        assert!(again.taken_over().is_none());
        drop(again);
        assert_eq!(std::fs::read_to_string(d.join(LOCK_FILE)).unwrap(), "", "released: emptied");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over_and_its_temporaries_removed() {
        let d = dir("dead");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        // What a process killed while writing leaves: its holder line and temporary files.
        let dead = Holder { pid: 4_000_000, host: "h".into(), what: "exvit train".into(), since: 1 };
        std::fs::write(d.join(LOCK_FILE), dead.to_text()).unwrap();
        std::fs::write(d.join(".ckpt-00000004.safetensors.tmp-4000000"), b"half").unwrap();
        std::fs::write(d.join("sub/.shard-00001.arrow.tmp-4000000"), b"half").unwrap();
        std::fs::write(d.join(".metrics.parquet.tmp-17"), b"another process's").unwrap();
        std::fs::write(d.join("ckpt-00000002.safetensors"), b"kept").unwrap();
        let lock = DirLock::acquire(&d, "resuming").unwrap();
        assert_eq!(lock.taken_over(), Some(&dead));
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .chain(std::fs::read_dir(d.join("sub")).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".exvit.lock", ".metrics.parquet.tmp-17", "ckpt-00000002.safetensors", "sub"]);
        let me = Holder::parse(&std::fs::read_to_string(lock.path()).unwrap()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.what.starts_with("resuming: "), "{}", me.what);
        drop(lock);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn holder_text_round_trips_and_garbage_is_no_holder() {
        let h = Holder { pid: 12, host: "node-1".into(), what: "exvit probe extract".into(), since: 1_700_000_000 };
        assert_eq!(Holder::parse(&h.to_text()), Some(h));
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("pid twelve\n"), None);
    }
}
