//! `exvit data pack`: an ImageFolder split to WebDataset-style tar shards
//! (`shard-NNNNNN.tar` holding `NNNNNN.<ext>` + `NNNNNN.cls`, and `classes.txt`), for streaming
//! at scale. Each shard and `classes.txt` is written to a temporary file and renamed, so an
//! interrupted pack leaves only whole files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::source::{DataError, Dataset, Location};
use exvit_common::{try_write_atomic, write_bytes_atomic};

/// Writes `ds` as tar shards of at most `per_shard` samples into `out` (created if needed).
/// Returns the shard paths.
pub fn pack_shards(ds: &Dataset, out: &Path, per_shard: usize) -> Result<Vec<PathBuf>, DataError> {
    assert!(per_shard > 0, "per_shard must be positive");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut shards = Vec::new();
    for (s, chunk) in ds.samples.chunks(per_shard).enumerate() {
        let path = out.join(format!("shard-{s:06}.tar"));
        try_write_atomic(&path, |file| -> Result<(), DataError> {
            let mut b = tar::Builder::new(file);
            for (i, sample) in chunk.iter().enumerate() {
                let key = s * per_shard + i;
                let ext = match &sample.location {
                    Location::File(p) => {
                        p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or("bin".into())
                    }
                    _ => "bin".to_string(),
                };
                let bytes = ds.read_bytes(sample)?;
                append(&mut b, &format!("{key:06}.{ext}"), &bytes).map_err(io(&path))?;
                append(&mut b, &format!("{key:06}.cls"), sample.label.to_string().as_bytes()).map_err(io(&path))?;
            }
            b.into_inner().and_then(|w| w.flush()).map_err(io(&path))
        })?;
        shards.push(path);
    }
    let classes = out.join("classes.txt");
    write_bytes_atomic(&classes, (ds.classes.join("\n") + "\n").as_bytes())?;
    Ok(shards)
}

fn append<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data)
}
