//! Containing a dependency's panic on bad input.
//!
//! Some readers exvit builds on panic on corrupt files instead of returning an error (polars'
//! Parquet and Arrow IPC readers: `thrift bool field`, `assertion failed: offset + length <=
//! self.length`, found by fuzzing, docs/reliability.md). exvit calls them through
//! [`catch_panic`] and turns the panic into an error naming the file. The panic hook still
//! prints the dependency's message first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many [`catch_panic`] calls are running now, on any thread.
static CONTAINING: AtomicUsize = AtomicUsize::new(0);

/// Whether some [`catch_panic`] is running now (on any thread: a contained reader may panic on
/// its thread pool's threads). A fuzzer's panic hook uses it to tell a contained panic from a
/// finding.
pub fn containing() -> bool {
    CONTAINING.load(Ordering::SeqCst) > 0
}

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
    CONTAINING.fetch_add(1, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.fetch_sub(1, Ordering::SeqCst);
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}
