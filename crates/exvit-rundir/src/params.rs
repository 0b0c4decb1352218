//! Parameter counts from a weights file.

use std::path::Path;

use exvit_common::FileError;

use crate::error::RunDirError;

pub use exvit_common::is_buffer_key;

/// Learned parameters in a safetensors file (every tensor but the buffers, [`is_buffer_key`]).
/// Reads only the file's JSON header, so a large checkpoint costs nothing to count.
pub fn count_params_in_file(path: &Path) -> Result<u64, RunDirError> {
    use std::io::Read;
    let bad = RunDirError::format(path);
    let mut f = std::fs::File::open(path).map_err(FileError::at(path))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| bad(format!("not a safetensors file (no header length): {e}")))?;
    let n = u64::from_le_bytes(n);
    let len = f.metadata().map_err(FileError::at(path))?.len();
    if n > 100 << 20 || n + 8 > len {
        return Err(bad(format!("not a safetensors file (header of {n} bytes in a file of {len})")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(FileError::at(path))?;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let mut total = 0u64;
    for (key, info) in header.iter().filter(|(k, _)| *k != "__metadata__" && !is_buffer_key(k)) {
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad(format!("tensor `{key}`: no shape in the header")))?;
        let numel = shape.iter().try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)));
        total += numel.ok_or_else(|| bad(format!("tensor `{key}`: bad shape {shape:?}")))?;
    }
    Ok(total)
}
