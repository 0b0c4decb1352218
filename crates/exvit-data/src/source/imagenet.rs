//! The ImageNet validation split as one flat folder, labelled by Kaggle's CSV or the devkit.

use std::path::{Path, PathBuf};

use super::folder::split_name;
use super::{Dataset, Layout, Location, Sample};
use crate::error::{io, DataError};

/// Looks up the label of a flat validation image from its path.
type LabelFn = Box<dyn Fn(&Path) -> Option<usize>>;

/// ImageNet validation images in one flat folder (`ILSVRC2012_val_NNNNNNNN.JPEG`), labelled by
/// Kaggle's `LOC_val_solution.csv`, or by the devkit's `ILSVRC2012_validation_ground_truth.txt`
/// mapped through the devkit's `meta.mat` (its labels follow meta.mat's `ILSVRC2012_ID` order,
/// not the sorted-wnid order). Both are looked for in the folder, its parent, and
/// `ILSVRC2012_devkit_t12/data` beside them.
pub(super) fn open_imagenet_flat_val(root: &Path, split: String, entries: Vec<PathBuf>) -> Result<Dataset, DataError> {
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
        let map = parse_loc_val_solution(&text, &csv)?;
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

/// Kaggle's `LOC_val_solution.csv` (`ImageId,PredictionString`, a header line, then e.g.
/// `ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295`): image id →
/// sorted-wnid class index of its first box. `path` names the file in errors.
pub fn parse_loc_val_solution(text: &str, path: &Path) -> Result<std::collections::HashMap<String, usize>, DataError> {
    let layout_err = |message: String| DataError::Layout { path: path.to_path_buf(), message };
    let mut map = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let (id, pred) = line.split_once(',').ok_or_else(|| layout_err(format!("line {}: no comma", i + 1)))?;
        let wnid = pred.split_whitespace().next().unwrap_or("");
        let label = crate::classes::imagenet_index(wnid)
            .ok_or_else(|| layout_err(format!("line {}: `{wnid}` is not an ImageNet-1k wnid", i + 1)))?;
        map.insert(id.to_string(), label);
    }
    Ok(map)
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
