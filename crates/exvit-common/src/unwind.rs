//! Containing a dependency's panic on bad input.
//!
//! Some readers exvit builds on panic on corrupt files instead of returning an error (polars'
//! Parquet and Arrow IPC readers: `thrift bool field`, `assertion failed: offset + length <=
//! self.length`, found by fuzzing, docs/reliability.md). exvit calls them through
//! [`catch_panic`] and turns the panic into an error naming the file. The panic hook still
//! prints the dependency's message first.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic inside it (on this thread or re-raised from a thread pool it used) comes
/// back as `Err(message)`.
///
/// # Example
/// ```
/// use exvit_common::unwind::catch_panic;
///
/// assert_eq!(catch_panic(|| 2 + 2), Ok(4));
/// let prev = std::panic::take_hook();
/// std::panic::set_hook(Box::new(|_| {})); // keep the doctest's output clean
/// let e = catch_panic(|| -> u8 { panic!("thrift bool field") });
/// std::panic::set_hook(prev);
/// assert_eq!(e, Err("thrift bool field".to_string()));
/// ```
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}
