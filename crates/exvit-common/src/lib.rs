//! exvit-common: the one home of the small helpers and shared vocabulary types every exvit
//! crate needs, with no dependency beyond the standard library, serde and tracing.
//!
//! - [`atomic`]: write a file through a temporary file beside it and a rename, so that nothing
//!   half-written is ever left under the final name (checkpoints, caches, tables, reports).
//! - [`hash`]: FNV-1a, 64 bits, for fingerprints of configs, files and keys (not cryptographic).
//! - [`keys`]: which timm keys are buffers, not parameters.
//! - [`lock`]: one writer per folder (run directories, feature caches), naming the holder.
//! - [`nonfinite`]: NaN/Inf counts of loaded tensors and the policy for them.
//! - [`pretrained`]: timm's `pretrained_cfg` (input size, crop, interpolation, mean/std,
//!   classifier key), shared by the zoo and the data pipeline.
//! - [`safetensors_header`]: a safetensors file's header without its data.
//! - [`unwind`]: a dependency's panic on a corrupt file, contained as an error.
//! - [`rng`]: SplitMix64 (Steele, Lea & Flood 2014), the seeded generator behind exvit's
//!   reproducible draws.
//!
//! # Example
//! ```
//! use exvit_common::{atomic::write_bytes_atomic, hash::fnv1a64, rng::SplitMix64};
//!
//! let dir = std::env::temp_dir().join(format!("exvit-common-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! write_bytes_atomic(&dir.join("hello.txt"), b"hello").unwrap();
//! assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), b"hello");
//! assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
//! let mut rng = SplitMix64::new(1234567);
//! assert_eq!(rng.next_u64(), 6457827717110365317);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod atomic;
pub mod hash;
pub mod keys;
pub mod lock;
pub mod nonfinite;
pub mod pretrained;
pub mod rng;
pub mod safetensors_header;
pub mod unwind;

pub use atomic::{try_write_atomic, write_atomic, write_bytes_atomic, FileError};
pub use hash::{fnv1a64, Fnv};
pub use keys::is_buffer_key;
pub use lock::{DirLock, LockError};
pub use nonfinite::{NonFinite, NonFiniteCount};
pub use rng::SplitMix64;
