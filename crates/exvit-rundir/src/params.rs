//! Parameter counts from a weights file.

use std::path::Path;

use exvit_common::safetensors_header::{read_header, shape_of, HeaderError};

use crate::error::RunDirError;

pub use exvit_common::is_buffer_key;

/// Learned parameters in a safetensors file (every tensor but the buffers, [`is_buffer_key`]).
/// Reads only the file's JSON header, so a large checkpoint costs nothing to count.
pub fn count_params_in_file(path: &Path) -> Result<u64, RunDirError> {
    let bad = RunDirError::format(path);
    let header = read_header(path).map_err(|e| match e {
        HeaderError::File(e) => RunDirError::File(e),
        HeaderError::Format { message, .. } => bad(format!("not a safetensors file ({message})")),
    })?;
    let mut total = 0u64;
    for key in header.keys().filter(|k| *k != "__metadata__" && !is_buffer_key(k)) {
        let shape = shape_of(&header, key).ok_or_else(|| bad(format!("tensor `{key}`: no shape in the header")))?;
        let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        total += numel.ok_or_else(|| bad(format!("tensor `{key}`: bad shape {shape:?}")))?;
    }
    Ok(total)
}
