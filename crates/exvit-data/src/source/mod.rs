//! Dataset sources. Each gives timm/torchvision's class indices: the sorted class-folder names
//! (for ImageNet, the sorted wnids).
//!
//! - ImageFolder: `root/<class>/**/<file>`; every regular, non-hidden file is a sample (a file
//!   that is not an image is reported by the check, never silently dropped).
//! - Tar shards, WebDataset style: `root/*.tar` holding `NNNNNN.jpg` + `NNNNNN.cls` pairs, with
//!   the class names in `root/classes.txt` (one per line, in index order).
//! - CIFAR-10/100 binary release: `cifar-10-batches-bin/` (`data_batch_{1..5}.bin`,
//!   `test_batch.bin`, `batches.meta.txt`) or `cifar-100-binary/` (`train.bin`, `test.bin`,
//!   `fine_label_names.txt`); records are a label byte (two for CIFAR-100: coarse, fine) and a
//!   32x32 image as R, G and B planes.
//!
//! A split is named by its folder (`train`, `val`, `test`); CIFAR's binary files name theirs.
//!
//! One module per source: [`folder`] (ImageFolder), [`tar`] (shards), [`cifar`] (binary
//! release), [`imagenet`] (the flat validation folder with its labels).

mod cifar;
mod folder;
mod imagenet;
mod tar;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(crate) use self::cifar::cifar_rgb;
use self::cifar::CIFAR_RECORD_PIXELS;
pub use self::cifar::{is_cifar_binary, open_cifar};
pub use self::folder::open_split;
pub use self::imagenet::{devkit_id_to_label, parse_loc_val_solution};
use crate::decode::{decode_rgb, RgbImage};
use crate::error::io;
pub use crate::error::DataError;

/// How a dataset is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `root/<class>/<file>`.
    ImageFolder,
    /// WebDataset-style tar shards.
    TarShards,
    /// CIFAR-10 binary release.
    Cifar10Binary,
    /// CIFAR-100 binary release (fine labels).
    Cifar100Binary,
    /// ImageNet validation images in one folder, labelled by a CSV or the devkit.
    ImageNetFlatVal,
}

/// Where a sample's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file.
    File(PathBuf),
    /// A member of a tar shard: its data's byte range.
    Tar {
        /// The shard.
        shard: PathBuf,
        /// The member's name.
        member: String,
        /// Offset of the data in the shard.
        offset: u64,
        /// Length of the data.
        len: u64,
    },
    /// A CIFAR binary record.
    Cifar {
        /// The batch file.
        file: PathBuf,
        /// Byte offset of the 32x32x3 planes.
        offset: u64,
    },
}

impl Location {
    /// A path for messages and manifests (`shard.tar/member` for tar members,
    /// `batch.bin#record` for CIFAR).
    pub fn display(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Tar { shard, member, .. } => format!("{}/{member}", shard.display()),
            Location::Cifar { file, offset } => format!("{}#{}", file.display(), offset / CIFAR_RECORD_PIXELS),
        }
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Where its bytes are.
    pub location: Location,
    /// Class index.
    pub label: usize,
}

/// One split of a dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The split's folder (or the CIFAR folder).
    pub root: PathBuf,
    /// The split's name.
    pub split: String,
    /// The layout.
    pub layout: Layout,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// The samples, in a stable order (sorted by class, then path).
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// The raw bytes of a sample (for CIFAR, the 3072 bytes of R, G and B planes).
    pub fn read_bytes(&self, sample: &Sample) -> Result<Vec<u8>, DataError> {
        match &sample.location {
            Location::File(p) => std::fs::read(p).map_err(io(p)),
            Location::Tar { shard, offset, len, .. } => read_range(shard, *offset, *len),
            Location::Cifar { file, offset } => read_range(file, *offset, CIFAR_RECORD_PIXELS),
        }
    }

    /// [`Dataset::read_bytes`] into a caller's buffer (cleared first), reused across samples.
    pub fn read_bytes_into(&self, sample: &Sample, buf: &mut Vec<u8>) -> Result<(), DataError> {
        use std::io::Read;
        buf.clear();
        let (path, offset, len) = match &sample.location {
            Location::File(p) => (p, 0, None),
            Location::Tar { shard, offset, len, .. } => (shard, *offset, Some(*len)),
            Location::Cifar { file, offset } => (file, *offset, Some(CIFAR_RECORD_PIXELS)),
        };
        let mut f = File::open(path).map_err(io(path))?;
        match len {
            None => {
                let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
                buf.reserve(size);
                f.read_to_end(buf).map_err(io(path))?;
            }
            Some(len) => {
                f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
                buf.resize(len as usize, 0);
                f.read_exact(buf).map_err(io(path))?;
            }
        }
        Ok(())
    }

    /// The sample as 8-bit RGB.
    pub fn load_rgb(&self, sample: &Sample, max_pixels: u64) -> Result<RgbImage, DataError> {
        let bytes = self.read_bytes(sample)?;
        if let Location::Cifar { .. } = sample.location {
            return Ok(cifar_rgb(&bytes));
        }
        decode_rgb(&bytes, max_pixels).map_err(|source| DataError::Decode { path: sample.location.display(), source })
    }
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, DataError> {
    let mut f = File::open(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(io(path))?;
    Ok(buf)
}

/// One split: `path` is a split folder (ImageFolder or tar shards), or a CIFAR binary release
/// folder, whose split `cifar_split` (`train` or `test`) is opened.
pub fn open_path(path: &Path, cifar_split: &str) -> Result<Dataset, DataError> {
    if is_cifar_binary(path) {
        open_cifar(path, cifar_split)
    } else {
        open_split(path)
    }
}

/// Every split under `root`: a CIFAR binary folder gives `train` and `test`; a folder with
/// `train`/`val`/`test` subfolders gives those; any other folder is one split.
pub fn discover(root: &Path) -> Result<Vec<Dataset>, DataError> {
    if !root.is_dir() {
        return Err(DataError::Layout { path: root.into(), message: "not a folder".into() });
    }
    if is_cifar_binary(root) {
        return ["train", "test"].iter().map(|s| open_cifar(root, s)).collect();
    }
    let splits: Vec<PathBuf> = ["train", "val", "test"].iter().map(|s| root.join(s)).filter(|p| p.is_dir()).collect();
    if splits.is_empty() {
        Ok(vec![open_split(root)?])
    } else {
        splits.iter().map(|p| open_split(p)).collect()
    }
}
