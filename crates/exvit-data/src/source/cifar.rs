//! The CIFAR-10/100 binary release: fixed-size records of label byte(s) and a 32x32 image as
//! R, G and B planes.

use std::path::Path;

use super::{Dataset, Layout, Location, Sample};
use crate::decode::RgbImage;
use crate::error::{io, DataError};

/// Pixels of one CIFAR record.
pub(super) const CIFAR_RECORD_PIXELS: u64 = 3072;

/// CIFAR's planar record (R plane, G plane, B plane) as interleaved RGB.
pub(crate) fn cifar_rgb(planes: &[u8]) -> RgbImage {
    let mut data = Vec::with_capacity(3072);
    for i in 0..1024 {
        data.extend_from_slice(&[planes[i], planes[1024 + i], planes[2048 + i]]);
    }
    RgbImage { width: 32, height: 32, data }
}

/// Opens split `split` (`train` or `test`) of a CIFAR-10/100 binary release folder.
pub fn open_cifar(root: &Path, split: &str) -> Result<Dataset, DataError> {
    let (layout, files, meta, label_bytes): (Layout, Vec<String>, &str, u64) = if root.join("data_batch_1.bin").exists()
    {
        let files = match split {
            "train" => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            "test" => vec!["test_batch.bin".to_string()],
            s => {
                return Err(DataError::Layout {
                    path: root.into(),
                    message: format!("CIFAR-10 has no split `{s}` (train, test)"),
                })
            }
        };
        (Layout::Cifar10Binary, files, "batches.meta.txt", 1)
    } else if root.join("train.bin").exists() {
        if split != "train" && split != "test" {
            return Err(DataError::Layout {
                path: root.into(),
                message: format!("CIFAR-100 has no split `{split}` (train, test)"),
            });
        }
        (Layout::Cifar100Binary, vec![format!("{split}.bin")], "fine_label_names.txt", 2)
    } else {
        return Err(DataError::Layout { path: root.into(), message: "not a CIFAR binary release folder".into() });
    };
    let meta_path = root.join(meta);
    let classes: Vec<String> = std::fs::read_to_string(&meta_path)
        .map_err(io(&meta_path))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let record = label_bytes + CIFAR_RECORD_PIXELS;
    let mut samples = Vec::new();
    for f in files {
        let path = root.join(&f);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if !(bytes.len() as u64).is_multiple_of(record) {
            return Err(DataError::Layout {
                path,
                message: format!("size {} is not a multiple of the {record}-byte record", bytes.len()),
            });
        }
        for (i, rec) in bytes.chunks_exact(record as usize).enumerate() {
            let label = rec[label_bytes as usize - 1] as usize;
            if label >= classes.len() {
                return Err(DataError::Layout {
                    path,
                    message: format!("record {i} has label {label}, but {} classes", classes.len()),
                });
            }
            samples.push(Sample {
                location: Location::Cifar { file: path.clone(), offset: i as u64 * record + label_bytes },
                label,
            });
        }
    }
    Ok(Dataset { root: root.to_path_buf(), split: split.to_string(), layout, classes, samples })
}

/// Whether `root` is a CIFAR-10/100 binary release folder.
pub fn is_cifar_binary(root: &Path) -> bool {
    root.join("data_batch_1.bin").exists() || root.join("train.bin").exists()
}
