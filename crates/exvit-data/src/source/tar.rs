//! WebDataset-style tar shards: `root/*.tar` holding `NNNNNN.<ext>` + `NNNNNN.cls` pairs, the
//! class names in `root/classes.txt`. Samples are byte ranges of the shards (no extraction).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, Layout, Location, Sample};
use crate::error::{io, DataError};

pub(super) fn open_tar_shards(root: &Path, split: String, tars: Vec<PathBuf>) -> Result<Dataset, DataError> {
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
