//! `exvit data`: dataset commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use exvit_data::manifest::write_manifest;
use exvit_data::source::discover;
use exvit_data::{check_dataset, CheckOptions, OnBadImage, DEFAULT_MAX_PIXELS};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BadImage {
    /// Report bad images (log and manifest) and skip them.
    Skip,
    /// Stop at the first bad image.
    Fail,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Decode every image of a dataset once: classes, counts per split, bad files with their
    /// reasons, image sizes; writes a Parquet manifest per split.
    Check {
        /// A split folder (ImageFolder or tar shards), a folder with train/val/test splits, or a
        /// CIFAR binary release folder.
        root: PathBuf,
        /// Folder for the manifests (`<dataset>-<split>.parquet`).
        #[arg(long, default_value = "manifests")]
        manifest_dir: PathBuf,
        /// What to do with an image that cannot be decoded.
        #[arg(long, value_enum, default_value_t = BadImage::Skip)]
        on_bad_image: BadImage,
        /// Pixel cap per image (width × height); larger headers are reported as bad.
        #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
        max_pixels: u64,
    },
    /// Write an ImageFolder split as WebDataset-style tar shards (plus classes.txt).
    Pack {
        /// The ImageFolder split.
        root: PathBuf,
        /// Output folder for `shard-NNNNNN.tar` and `classes.txt`.
        out: PathBuf,
        /// Samples per shard.
        #[arg(long, default_value_t = 10_000)]
        per_shard: usize,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Pack { root, out, per_shard } => {
            anyhow::ensure!(per_shard > 0, "--per-shard must be positive");
            let ds = exvit_data::open_split(&root).with_context(|| format!("reading {}", root.display()))?;
            let shards = exvit_data::pack::pack_shards(&ds, &out, per_shard)
                .with_context(|| format!("packing {} into {}", root.display(), out.display()))?;
            println!(
                "packed {} samples of {} classes into {} shards in {}",
                ds.samples.len(),
                ds.classes.len(),
                shards.len(),
                out.display()
            );
            Ok(())
        }
        DataCommand::Check { root, manifest_dir, on_bad_image, max_pixels } => {
            let on_bad_image = match on_bad_image {
                BadImage::Skip => OnBadImage::Skip,
                BadImage::Fail => OnBadImage::Fail,
            };
            let splits = discover(&root).with_context(|| format!("reading dataset {}", root.display()))?;
            std::fs::create_dir_all(&manifest_dir)
                .with_context(|| format!("cannot create manifest folder {}", manifest_dir.display()))?;
            // The dataset's name: the root's, or its parent's when the root is itself a split.
            let canon = root.canonicalize().with_context(|| format!("reading dataset {}", root.display()))?;
            let is_split =
                splits.len() == 1 && canon.file_name().is_some_and(|n| n.to_string_lossy() == splits[0].split);
            let named = if is_split { canon.parent().unwrap_or(&canon) } else { &canon };
            let dataset = named.file_name().map_or("dataset".to_string(), |n| n.to_string_lossy().into_owned());
            for ds in splits {
                let bar = ProgressBar::new(ds.samples.len() as u64).with_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                        .expect("progress template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("check {}", ds.split));
                let report = check_dataset(&ds, CheckOptions { max_pixels, on_bad_image }, &|n| {
                    if n % 256 == 0 {
                        bar.set_position(n as u64)
                    }
                })
                .with_context(|| format!("checking {}", ds.root.display()))?;
                bar.finish_and_clear();
                let counts = report.counts();
                println!(
                    "split {}: {} images, {} classes ({})",
                    report.split,
                    report.records.len(),
                    report.classes.len(),
                    ds.root.display()
                );
                for (name, n) in report.classes.iter().zip(&counts) {
                    println!("  {name:<24} {n}");
                }
                let bad = report.bad();
                println!("  bad images: {}", bad.len());
                for r in &bad {
                    if let exvit_data::Status::Bad(why) = &r.status {
                        println!("    {}: {why}", r.path);
                    }
                }
                let sizes = report.sizes();
                let shown: Vec<String> = sizes.iter().take(5).map(|((w, h), n)| format!("{w}x{h} ({n})")).collect();
                println!("  image sizes: {} distinct; most common: {}", sizes.len(), shown.join(", "));
                let name = format!("{dataset}-{}.parquet", report.split);
                let path = manifest_dir.join(name);
                write_manifest(&report.records, &path).with_context(|| format!("writing {}", path.display()))?;
                println!("  manifest: {}", path.display());
            }
            Ok(())
        }
    }
}
