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

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::decode::{decode_rgb, DecodeError, RgbImage};

/// Errors of dataset discovery and reading.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file or folder cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder is not a dataset exvit knows.
    #[error("{path}: {message}")]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// A sample could not be decoded.
    #[error("{path}: {source}")]
    Decode {
        /// The sample's path (for tar members, `shard.tar/member`).
        path: String,
        /// Why.
        source: DecodeError,
    },
    /// The loader could not start its threads.
    #[error("the data loader could not start: {0}")]
    Loader(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

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

const CIFAR_RECORD_PIXELS: u64 = 3072;

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

/// CIFAR's planar record (R plane, G plane, B plane) as interleaved RGB.
pub(crate) fn cifar_rgb(planes: &[u8]) -> RgbImage {
    let mut data = Vec::with_capacity(3072);
    for i in 0..1024 {
        data.extend_from_slice(&[planes[i], planes[1024 + i], planes[2048 + i]]);
    }
    RgbImage { width: 32, height: 32, data }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_, _>>()?;
    v.retain(|p| !is_hidden(p));
    v.sort();
    Ok(v)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            files_under(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn split_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Opens one split stored as an ImageFolder or as tar shards.
pub fn open_split(path: &Path) -> Result<Dataset, DataError> {
    let entries = sorted_entries(path)?;
    let split = split_name(path);
    let tars: Vec<PathBuf> = entries.iter().filter(|p| p.extension().is_some_and(|e| e == "tar")).cloned().collect();
    if !tars.is_empty() {
        return open_tar_shards(path, split, tars);
    }
    let class_dirs: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    let flat_val = entries.iter().any(|p| split_name(p).starts_with("ILSVRC2012_val_"));
    if class_dirs.is_empty() && flat_val {
        return open_imagenet_flat_val(path, split, entries);
    }
    if class_dirs.is_empty() {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            message: "no class folders (ImageFolder: root/<class>/<file>) and no .tar shards".to_string(),
        });
    }
    let mut classes = Vec::new();
    let mut samples = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        classes.push(split_name(dir));
        let mut files = Vec::new();
        files_under(dir, &mut files)?;
        samples.extend(files.into_iter().map(|p| Sample { location: Location::File(p), label }));
    }
    Ok(Dataset { root: path.to_path_buf(), split, layout: Layout::ImageFolder, classes, samples })
}

/// Looks up the label of a flat validation image from its path.
type LabelFn = Box<dyn Fn(&Path) -> Option<usize>>;

/// ImageNet validation images in one flat folder (`ILSVRC2012_val_NNNNNNNN.JPEG`), labelled by
/// Kaggle's `LOC_val_solution.csv`, or by the devkit's `ILSVRC2012_validation_ground_truth.txt`
/// mapped through the devkit's `meta.mat` (its labels follow meta.mat's `ILSVRC2012_ID` order,
/// not the sorted-wnid order). Both are looked for in the folder, its parent, and
/// `ILSVRC2012_devkit_t12/data` beside them.
fn open_imagenet_flat_val(root: &Path, split: String, entries: Vec<PathBuf>) -> Result<Dataset, DataError> {
    let parent = root.parent().unwrap_or(root);
    let dirs = [
        root.to_path_buf(),
        parent.to_path_buf(),
        root.join("ILSVRC2012_devkit_t12/data"),
        parent.join("ILSVRC2012_devkit_t12/data"),
    ];
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let layout_err = |path: &Path, message: String| DataError::Layout { path: path.to_path_buf(), message };
    let file_number = |p: &Path| -> Option<usize> {
        let n = split_name(p);
        n.strip_prefix("ILSVRC2012_val_")?.split('.').next()?.parse().ok()
    };
    let label_of: LabelFn = if let Some(csv) = find("LOC_val_solution.csv") {
        let text = std::fs::read_to_string(&csv).map_err(io(&csv))?;
        let mut map = std::collections::HashMap::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let (id, pred) =
                line.split_once(',').ok_or_else(|| layout_err(&csv, format!("line {}: no comma", i + 1)))?;
            let wnid = pred.split_whitespace().next().unwrap_or("");
            let label = crate::classes::imagenet_index(wnid)
                .ok_or_else(|| layout_err(&csv, format!("line {}: `{wnid}` is not an ImageNet-1k wnid", i + 1)))?;
            map.insert(id.to_string(), label);
        }
        Box::new(move |p: &Path| map.get(split_name(p).split('.').next().unwrap_or("")).copied())
    } else if let (Some(gt), Some(meta)) = (find("ILSVRC2012_validation_ground_truth.txt"), find("meta.mat")) {
        let by_id = devkit_id_to_label(&meta)?;
        let text = std::fs::read_to_string(&gt).map_err(io(&gt))?;
        let labels: Vec<usize> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let id: usize =
                    l.trim().parse().map_err(|_| layout_err(&gt, format!("line {}: `{l}` is not an id", i + 1)))?;
                by_id
                    .get(&id)
                    .copied()
                    .ok_or_else(|| layout_err(&gt, format!("line {}: id {id} is not in {}", i + 1, meta.display())))
            })
            .collect::<Result<_, _>>()?;
        Box::new(move |p: &Path| file_number(p).and_then(|n| labels.get(n.checked_sub(1)?).copied()))
    } else {
        return Err(layout_err(
            root,
            "flat ImageNet validation images but no labels: put Kaggle's LOC_val_solution.csv, or the devkit's \
             ILSVRC2012_validation_ground_truth.txt and meta.mat, in this folder or its parent"
                .to_string(),
        ));
    };
    let mut samples = Vec::new();
    for p in entries.into_iter().filter(|p| p.is_file() && split_name(p).starts_with("ILSVRC2012_val_")) {
        let label = label_of(&p).ok_or_else(|| layout_err(&p, "no label for this image".to_string()))?;
        samples.push(Sample { location: Location::File(p), label });
    }
    samples.sort_by(|a, b| a.label.cmp(&b.label).then_with(|| a.location.display().cmp(&b.location.display())));
    let classes = crate::classes::imagenet_classes().iter().map(|c| c.wnid.to_string()).collect();
    Ok(Dataset { root: root.to_path_buf(), split, layout: Layout::ImageNetFlatVal, classes, samples })
}

/// The devkit's `ILSVRC2012_ID` → sorted-wnid class index, from `meta.mat`'s `synsets`.
pub fn devkit_id_to_label(meta: &Path) -> Result<std::collections::HashMap<usize, usize>, DataError> {
    let err = |message: String| DataError::Layout { path: meta.to_path_buf(), message };
    let bytes = std::fs::read(meta).map_err(io(meta))?;
    let vars = crate::matfile::read_mat(&bytes).map_err(err)?;
    let synsets = vars
        .iter()
        .find(|(n, _)| n == "synsets")
        .map(|(_, v)| v)
        .ok_or_else(|| err("no `synsets` variable".to_string()))?;
    let mut map = std::collections::HashMap::new();
    for i in 0..synsets.len() {
        let id = synsets.field(i, "ILSVRC2012_ID").and_then(|v| v.as_number());
        let wnid = synsets.field(i, "WNID").and_then(|v| v.as_str());
        let (Some(id), Some(wnid)) = (id, wnid) else {
            return Err(err(format!("synsets({}) lacks ILSVRC2012_ID or WNID", i + 1)));
        };
        // meta.mat also lists the higher WordNet nodes (ids above 1000): only leaves are classes.
        if let Some(label) = crate::classes::imagenet_index(wnid) {
            map.insert(id as usize, label);
        }
    }
    if map.is_empty() {
        return Err(err("no ImageNet-1k synsets".to_string()));
    }
    Ok(map)
}

fn open_tar_shards(root: &Path, split: String, tars: Vec<PathBuf>) -> Result<Dataset, DataError> {
    let classes_file = root.join("classes.txt");
    let mut classes: Vec<String> = match std::fs::read_to_string(&classes_file) {
        Ok(t) => t.lines().map(str::to_string).filter(|l| !l.is_empty()).collect(),
        Err(_) => Vec::new(),
    };
    let mut samples = Vec::new();
    for shard in &tars {
        let mut archive = tar::Archive::new(File::open(shard).map_err(io(shard))?);
        let mut images: Vec<(String, u64, u64)> = Vec::new();
        let mut labels: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for entry in archive.entries().map_err(io(shard))? {
            let mut entry = entry.map_err(io(shard))?;
            let name = entry.path().map_err(io(shard))?.to_string_lossy().into_owned();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
            if ext == "cls" {
                let mut s = String::new();
                entry.read_to_string(&mut s).map_err(io(shard))?;
                let label = s.trim().parse::<usize>().map_err(|_| DataError::Layout {
                    path: shard.clone(),
                    message: format!("{name}: class `{}` is not an index", s.trim()),
                })?;
                labels.insert(stem.to_string(), label);
            } else {
                images.push((name.clone(), entry.raw_file_position(), entry.size()));
            }
        }
        for (member, offset, len) in images {
            let stem = member.rsplit_once('.').map_or(member.as_str(), |(s, _)| s).to_string();
            let label = *labels.get(&stem).ok_or_else(|| DataError::Layout {
                path: shard.clone(),
                message: format!("{member} has no {stem}.cls"),
            })?;
            samples.push(Sample { location: Location::Tar { shard: shard.clone(), member, offset, len }, label });
        }
    }
    let max = samples.iter().map(|s| s.label + 1).max().unwrap_or(0);
    if classes.is_empty() {
        classes = (0..max).map(|i| i.to_string()).collect();
    } else if max > classes.len() {
        return Err(DataError::Layout {
            path: classes_file,
            message: format!("{} classes listed but a shard uses label {}", classes.len(), max - 1),
        });
    }
    Ok(Dataset { root: root.to_path_buf(), split, layout: Layout::TarShards, classes, samples })
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
