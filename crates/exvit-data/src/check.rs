//! `exvit data check`: decode every sample once, count, and record what is wrong with the bad
//! ones. Bad files are reported with their path and reason and skipped (or fail the run, by
//! choice); they are never dropped silently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::decode::{decode_rgb, sniff, DEFAULT_MAX_PIXELS};
use crate::source::{DataError, Dataset, Location};

/// What to do with an image that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadImage {
    /// Report it (log and manifest) and go on.
    #[default]
    Skip,
    /// Stop with an error naming it.
    Fail,
}

/// Options of [`check_dataset`].
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Pixel cap per image (header bombs are rejected before decoding).
    pub max_pixels: u64,
    /// Bad-image policy.
    pub on_bad_image: OnBadImage,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self { max_pixels: DEFAULT_MAX_PIXELS, on_bad_image: OnBadImage::Skip }
    }
}

/// Whether a sample decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Decoded.
    Ok,
    /// Not decodable, with the reason.
    Bad(String),
}

/// One manifest row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Path (`shard.tar/member` for tar members, `batch.bin#i` for CIFAR records).
    pub path: String,
    /// Class index.
    pub label: u32,
    /// Width (0 when bad).
    pub width: u32,
    /// Height (0 when bad).
    pub height: u32,
    /// Size of the stored bytes.
    pub bytes: u64,
    /// `jpeg`, `png`, `gif`, `raw` (CIFAR) or `unknown`.
    pub format: String,
    /// `ok`, or why not.
    pub status: Status,
}

/// What a check found in one split.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Split name.
    pub split: String,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// One record per sample, in dataset order.
    pub records: Vec<Record>,
}

impl CheckReport {
    /// Samples per class index.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for r in &self.records {
            c[r.label as usize] += 1;
        }
        c
    }

    /// The bad records.
    pub fn bad(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| r.status != Status::Ok).collect()
    }

    /// Image sizes (`WxH`) and how many images have each, most common first.
    pub fn sizes(&self) -> Vec<((u32, u32), usize)> {
        let mut m: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.status == Status::Ok) {
            *m.entry((r.width, r.height)).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Decodes every sample of `ds` on the rayon pool. `progress` is called with the number of
/// samples done so far (from any thread).
pub fn check_dataset(
    ds: &Dataset,
    opts: CheckOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<CheckReport, DataError> {
    let done = AtomicUsize::new(0);
    let records: Vec<Record> = ds
        .samples
        .par_iter()
        .map(|s| {
            let path = s.location.display();
            let rec = match ds.read_bytes(s) {
                Err(e) => Err(e),
                Ok(bytes) => {
                    let n = bytes.len() as u64;
                    let raw = matches!(s.location, Location::Cifar { .. });
                    let format = if raw { "raw" } else { sniff(&bytes).map_or("unknown", |f| f.name()) };
                    let (width, height, status) = if raw {
                        (32, 32, Status::Ok)
                    } else {
                        match decode_rgb(&bytes, opts.max_pixels) {
                            Ok(img) => (img.width, img.height, Status::Ok),
                            Err(e) => (0, 0, Status::Bad(e.to_string())),
                        }
                    };
                    Ok(Record { path, label: s.label as u32, width, height, bytes: n, format: format.into(), status })
                }
            };
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            rec
        })
        .collect::<Result<_, _>>()?;
    let report = CheckReport { split: ds.split.clone(), classes: ds.classes.clone(), records };
    for r in report.bad() {
        if let Status::Bad(why) = &r.status {
            tracing::warn!(path = %r.path, reason = %why, "bad image");
        }
    }
    if opts.on_bad_image == OnBadImage::Fail {
        if let Some(r) = report.bad().first() {
            let Status::Bad(why) = &r.status else { unreachable!() };
            return Err(DataError::Layout {
                path: r.path.clone().into(),
                message: format!("bad image ({why}); run with --on-bad-image skip to report and skip bad images"),
            });
        }
    }
    Ok(report)
}
