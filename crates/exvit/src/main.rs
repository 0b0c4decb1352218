//! `exvit`: the command-line interface. Thin: parsing, files and printing; the work is in the
//! library crates.

mod bench;
mod common;
mod data;
mod demo;
mod device;
mod export;
mod forward;
mod probe;
mod train;
mod zoo;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// exvit: MobileViT and ExMobileViT research toolkit.
#[derive(Parser)]
#[command(name = "exvit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: train MobileViT, ExMobileViT and the wide-head control briefly on an
    /// embedded procedural dataset (or --data), probe every tap, CKA, and write the report.
    Demo(demo::DemoArgs),
    /// Write an HTML + Markdown report from run directories and probe tables.
    Report(demo::ReportArgs),
    /// Run a zoo model in eval mode on an input batch and print or save its outputs.
    Forward(forward::ForwardArgs),
    /// Export a model (eval mode, BatchNorm folded) as ONNX, for ONNX Runtime, tract, TensorRT...
    Export(export::ExportArgs),
    /// Time a forward pass or a training step (one configuration per process).
    Bench(bench::BenchArgs),
    /// Datasets: check a dataset and write its manifest.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model: a run directory with config, metrics, checkpoints, provenance.
    Train(train::TrainArgs),
    /// Evaluate weights on a dataset split: top-1 and top-5.
    Eval(train::EvalArgs),
    /// The model zoo.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
    /// Feature taps, the feature cache, linear probes and CKA.
    #[command(subcommand)]
    Probe(probe::ProbeCommand),
}

fn main() -> Result<()> {
    // Reuse freed buffers instead of mapping fresh pages for every op (docs/performance.md).
    let retained = exvit_layers::memory::retain_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("EXVIT_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::debug!(retained, "malloc keeps freed memory for reuse");
    match Cli::parse().command {
        Command::Forward(args) => forward::run(args),
        Command::Zoo(cmd) => zoo::run(cmd),
        Command::Export(args) => export::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::eval(args),
        Command::Probe(cmd) => probe::run(cmd),
        Command::Demo(args) => demo::demo(args),
        Command::Report(args) => demo::report(args),
    }
}
