//! ONNX export of exvit's models: a [`MobileVit`](exvit_zoo::MobileVit) (any zoo model,
//! ExMobileViT and TOML variants included) in eval mode → an ONNX file (opset 17 or later)
//! that ONNX Runtime, tract and other runtimes run, so that a model trained or probed in
//! exvit can be deployed (MobileViT's purpose) or checked against another implementation.
//!
//! - [`export`]: the model → a [`proto::ModelProto`] (BatchNorm folded; output `logits`,
//!   optionally every stage, ExShortcut and the classifier input);
//! - [`write_onnx`]: to a file, atomically (a temporary file, then a rename);
//! - [`proto`]: the ONNX messages, declared with prost's derive (no `protoc` at build time).
//!
//! The operators: Conv, Sigmoid, Mul, Add, Concat, Reshape, Transpose, MatMul, Softmax,
//! LayerNormalization, GlobalAveragePool, Flatten, Identity (timm's resize of odd maps to a
//! multiple of the patch is two MatMuls by constant interpolation matrices). The tests run every export in tract
//! (a pure-Rust runtime) against exvit's own forward; `tools/onnx/check.py` runs ONNX Runtime
//! and timm on the same weights.

pub mod export;
mod graph;
pub mod proto;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use export::{export, ExportOptions, OPSETS};
use prost::Message;

/// Why a model cannot be exported or written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The options are invalid (names the option).
    #[error("{0}")]
    Options(String),
    /// The file cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The model's protobuf bytes.
pub fn to_bytes(model: &proto::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes `model` to `path`: a temporary file in the same folder, synced, then renamed, so that
/// `path` is either the old file or the whole new one.
pub fn write_onnx(path: &Path, model: &proto::ModelProto) -> Result<(), ExportError> {
    let io = |source| ExportError::Io { path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| io(std::io::Error::other("not a file name")))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&to_bytes(model))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
