//! exvit-report: one self-contained HTML file (inline SVG plots, no network) and a Markdown
//! twin, from run directories (`metrics.parquet`, `config.toml`, `provenance.json`) and probe
//! tables (`probes.parquet`, `cka.parquet`). It only reads: nothing here trains or computes
//! features.
//!
//! ```text
//! dirs ─> collect (runs, probes, CKA) ─> render (figures: plotters SVG; tables; provenance)
//!      ─> write: report.html, report.md, report_figures/*.svg
//! ```

pub mod collect;
pub mod plot;
pub mod render;
pub mod stats;

pub use collect::{collect, Inputs, Run};
pub use plot::{heatmap, line_chart, Series};
pub use plotters::prelude::SeriesLabelPosition;
pub use render::{render, write_report, Figure, Report, ReportOptions};

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
    /// An input file cannot be read.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("plot `{figure}`: {message}")]
    Plot {
        /// The figure.
        figure: String,
        /// What went wrong.
        message: String,
    },
}
