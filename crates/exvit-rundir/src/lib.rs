//! exvit-rundir: the files exvit writes and reads back, in one place, with no model code.
//!
//! A **run directory** (what `exvit train` writes, what `exvit report` reads):
//!
//! ```text
//! RUN_DIR/config.toml          the resolved run config (the header: model, seed, …)
//! RUN_DIR/metrics.parquet      one row per iteration (kind "train") and per evaluation ("eval")
//! RUN_DIR/predictions.parquet  per-image label ranks of the latest evaluation
//! RUN_DIR/provenance.json      git commit, config hash, seed, versions, hardware, wall time
//! RUN_DIR/ckpt-NNNNNNNN.safetensors   the last checkpoints (full training state)
//! RUN_DIR/best.safetensors     the checkpoint with the best validation top-1
//! RUN_DIR/model.safetensors, ema.safetensors   the latest weights, timm keys
//! ```
//!
//! and the probe tables `probes.parquet` and `cka.parquet`, and the attention tables
//! `attention.parquet`, `attention_maps.parquet` and `attention_images.parquet`. The training engine and the probe
//! crate write through this crate; the report reads through it, so it needs neither burn nor the
//! engine. Readers are lenient where a format grew (a config key added later, a provenance
//! field missing in old runs) and strict where a value is needed (a missing column is an error
//! naming the file and the column). Every file is written atomically
//! ([`exvit_common::atomic`]).
//!
//! # Example
//! ```
//! use exvit_rundir::{MetricKind, MetricRow, RunDir};
//!
//! let dir = RunDir::new(std::env::temp_dir().join(format!("exvit-rundir-doc-{}", std::process::id())));
//! std::fs::create_dir_all(dir.path()).unwrap();
//! let rows = vec![MetricRow { kind: MetricKind::Eval, epoch: 0, top1: 87.5, ..Default::default() }];
//! exvit_rundir::write_metrics(&rows, &dir.metrics()).unwrap();
//! assert_eq!(exvit_rundir::read_metrics(&dir.metrics()).unwrap(), rows);
//! # std::fs::remove_dir_all(dir.path()).unwrap();
//! ```

mod attention;
mod error;
mod header;
mod layout;
mod metrics;
mod params;
mod parquet;
mod predictions;
mod provenance;
mod tables;
mod weights;

pub use attention::{
    read_attention, read_attention_maps, write_attention, write_attention_maps, AttentionMap, AttentionMaps,
    AttentionRow, MapImage,
};
pub use error::RunDirError;
pub use header::RunHeader;
pub use layout::RunDir;
pub use metrics::{read_metrics, write_metrics, MetricKind, MetricRow};
pub use params::{count_params_in_file, is_buffer_key};
pub use parquet::read_parquet;
pub use predictions::{read_predictions, write_predictions, Predictions};
pub use provenance::{read_provenance, write_provenance, Provenance};
pub use tables::{read_cka, read_probes, write_cka, write_probes, CkaRow, ProbeRow};
pub use weights::WeightsRef;
