//! exvit-probe: does an intermediate feature carry class information?
//!
//! One image travels: the data loader (eval transform of the model's pretrained config) →
//! the frozen model's named tap points ([`exvit_zoo::MobileVit::forward_taps`]) → a pooling
//! ([`Pooling`]) → an on-disk feature cache ([`cache`], sharded Arrow IPC, resumable) →
//! standardised features → a multinomial logistic-regression probe ([`probe`], L-BFGS: [`lbfgs`])
//! or linear CKA ([`cka`]) → tidy tables ([`table`]: `probes.parquet`, `cka.parquet`).
//!
//! Everything that computes is generic over the burn backend, so the same code runs on the CPU
//! (flex) and on the GPU.

pub mod attention;
pub mod attention_run;
pub mod cache;
pub mod cka;
pub mod error;
pub mod extract;
pub mod lbfgs;
pub mod matrix;
mod objective;
mod objective_host;
pub mod pool;
pub mod probe;
pub mod study;

pub use attention_run::{attention_maps, attention_stats, balanced_subset, first_blocks, AttentionConfig};
pub use cache::{Cache, CachedTap, Dtype, Features, Manifest};
pub use cka::{linear_cka, linear_cka_host};
pub use error::ProbeError;
pub use extract::{extract, list_taps, ExtractConfig, ExtractSummary, TapInfo};
pub use exvit_rundir::{
    read_attention, read_attention_maps, read_cka, read_probes, write_attention, write_attention_maps, write_cka,
    write_probes, AttentionMap, AttentionMaps, AttentionRow, CkaRow, MapImage, ProbeRow, WeightsRef,
};
pub use matrix::Matrix;
pub use pool::{Pooling, TapSpec};
pub use probe::{fit_logreg, run_probe, standardize, LogReg, ProbeConfig, ProbeResult};
pub use study::{cka_caches, probe_caches};
