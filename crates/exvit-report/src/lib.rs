//! exvit-report: one self-contained HTML file (inline SVG plots, no network) and a Markdown
//! twin, from run directories (`metrics.parquet`, `config.toml`, `provenance.json`) and probe
//! tables (`probes.parquet`, `cka.parquet`) and attention tables (`attention.parquet`,
//! `attention_maps.parquet`). It only reads: nothing here trains or computes
//! features.
//!
//! ```text
//! dirs ─> collect (exvit-rundir: runs, probes, CKA)
//!      ─> figures (plotters SVG) + tables (models, comparisons, probes, provenance)
//!      ─> page: report.html, report.md, report_figures/*.svg
//! ```
//!
//! It depends on exvit-rundir (the formats), plotters and png (the images under attention
//! maps) only: no burn, no model code.

pub mod attention;
pub mod collect;
pub mod figures;
pub mod page;
pub mod plot;
pub mod stats;
pub mod tables;

pub use collect::{collect, Inputs, Run};
pub use figures::{depth_key, Figure};
pub use page::{render, write_report, Report, ReportOptions, Section};
pub use plot::{heatmap, line_chart, LineStyle, Marker, Series};
pub use tables::Table;

use std::path::PathBuf;

/// What can go wrong while writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// File system error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A folder given is not one.
    #[error("{}: not a folder", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// An input file cannot be read (names the file and the column or field).
    #[error(transparent)]
    Input(#[from] exvit_rundir::RunDirError),
    /// An output file.
    #[error(transparent)]
    File(#[from] exvit_common::FileError),
    /// A plot could not be drawn.
    #[error("plot `{figure}`: {message}")]
    Plot {
        /// The figure.
        figure: String,
        /// What went wrong.
        message: String,
    },
}
