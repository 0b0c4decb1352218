//! ImageFolder: `root/<class>/**/<file>`, classes in sorted folder order (torchvision's
//! indices); dispatches to tar shards and the flat ImageNet validation folder by content.

use std::path::{Path, PathBuf};

use super::imagenet::open_imagenet_flat_val;
use super::tar::open_tar_shards;
use super::{Dataset, Layout, Location, Sample};
use crate::error::{io, DataError};

pub(super) fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

pub(super) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
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

pub(super) fn split_name(path: &Path) -> String {
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
