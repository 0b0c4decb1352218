//! timm `state_dict` key conventions shared by the zoo (module tensors) and the file readers
//! (weights files on disk).

/// Whether a key names a buffer rather than a learned parameter: BatchNorm's running
/// statistics and batch counter, which timm's `model.parameters()` leaves out.
///
/// # Example
/// ```
/// use exvit_common::is_buffer_key;
/// assert!(is_buffer_key("stem.bn.running_var"));
/// assert!(!is_buffer_key("stem.bn.weight"));
/// ```
pub fn is_buffer_key(key: &str) -> bool {
    matches!(key.rsplit('.').next(), Some("running_mean" | "running_var" | "num_batches_tracked"))
}
