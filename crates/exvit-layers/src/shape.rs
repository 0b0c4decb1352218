use thiserror::Error;

/// A tensor given to a layer does not have the shape that the layer declares.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    /// The channel dimension does not match.
    #[error("{layer}: expected input {expected}, got shape {got:?}")]
    Mismatch {
        /// The layer, with its configuration (e.g. `ConvNormAct(16->32, k3, s2)`).
        layer: String,
        /// The expected shape, as text (e.g. `[N, 16, H, W]`).
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },
}

/// Checks that dim 1 of an NCHW tensor is `channels`.
pub fn check_channels(layer: &dyn Fn() -> String, dims: [usize; 4], channels: usize) -> Result<(), ShapeError> {
    if dims[1] != channels {
        return Err(ShapeError::Mismatch {
            layer: layer(),
            expected: format!("[N, {channels}, H, W]"),
            got: dims.to_vec(),
        });
    }
    Ok(())
}

/// Checks that the last dim of a rank-`D` tensor is `features`.
pub fn check_last_dim<const D: usize>(
    layer: &dyn Fn() -> String,
    dims: [usize; D],
    features: usize,
) -> Result<(), ShapeError> {
    if dims[D - 1] != features {
        let mut expected: Vec<String> = (0..D - 1).map(|i| format!("d{i}")).collect();
        expected.push(features.to_string());
        return Err(ShapeError::Mismatch {
            layer: layer(),
            expected: format!("[{}]", expected.join(", ")),
            got: dims.to_vec(),
        });
    }
    Ok(())
}

/// Panics with the error's message: for `forward`, whose signature has no room for a `Result`.
pub(crate) fn or_panic(r: Result<(), ShapeError>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}
