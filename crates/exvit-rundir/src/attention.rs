//! Attention tables: `attention.parquet` (one row per model × weights × transformer layer ×
//! head: mean attention distance, entropy, self-attention, what `exvit probe attention`
//! computes over a dataset split) and the attention maps of a few images for the report
//! (`attention_maps.parquet`, one row per map, and `attention_images.parquet`, the images the
//! maps are drawn over). Writing appends, as the probe tables do: several models' maps share
//! one folder, and an image already there (same source and pixels) is not stored twice.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::RunDirError;
use crate::parquet::{self, binary, bytes, numbers, nums, strings as s, strs};
use crate::weights::WeightsRef;

/// One head of one transformer layer, averaged over every query of every image of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionRow {
    /// Model (registry name or config path).
    pub model: String,
    /// The weights.
    pub weights: WeightsRef,
    /// The MobileViT block, `stages.S.B`.
    pub block: String,
    /// The transformer layer within the block (its tap is `{block}.transformer.{layer}`).
    pub layer: u32,
    /// The head.
    pub head: u32,
    /// Input side, pixels.
    pub size: u32,
    /// Patch grid rows (tokens = `grid_h · grid_w`).
    pub grid_h: u32,
    /// Patch grid columns.
    pub grid_w: u32,
    /// Input pixels between vertically neighbouring patches.
    pub step_h: f64,
    /// Input pixels between horizontally neighbouring patches.
    pub step_w: f64,
    /// Mean attention distance, input pixels.
    pub distance: f64,
    /// Mean attention entropy, nats.
    pub entropy: f64,
    /// Mean attention of a token to itself.
    pub self_attention: f64,
    /// Images averaged over.
    pub images: u32,
}

impl AttentionRow {
    /// The tap name of the layer, `stages.S.B.transformer.K`.
    pub fn tap(&self) -> String {
        format!("{}.transformer.{}", self.block, self.layer)
    }
}

/// One head's attention over the patch grid, for one image: from one query patch, or the mean
/// over queries.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    /// Model.
    pub model: String,
    /// The weights.
    pub weights: WeightsRef,
    /// The image (an index into the images of the same folder's `attention_images.parquet`).
    pub image: u32,
    /// The MobileViT block, `stages.S.B`.
    pub block: String,
    /// The transformer layer.
    pub layer: u32,
    /// The head.
    pub head: u32,
    /// `centre` (the query patch at the grid's centre) or `mean` (averaged over queries).
    pub query: String,
    /// Patch grid rows.
    pub grid_h: u32,
    /// Patch grid columns.
    pub grid_w: u32,
    /// The attention paid to each patch, row-major, averaged over the positions within a
    /// patch (`grid_h · grid_w` values summing to 1).
    pub values: Vec<f32>,
}

/// An image the maps are drawn over: the model's input before normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct MapImage {
    /// Its index (what [`AttentionMap::image`] refers to).
    pub image: u32,
    /// Its class name.
    pub label: String,
    /// Where it came from (a path within the dataset).
    pub source: String,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// RGB, 8 bits per channel, row-major (`width · height · 3` bytes).
    pub rgb: Vec<u8>,
}

/// A folder's attention maps and the images under them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttentionMaps {
    /// The images.
    pub images: Vec<MapImage>,
    /// The maps.
    pub maps: Vec<AttentionMap>,
}

impl AttentionMaps {
    /// The maps file in `dir`.
    pub fn maps_path(dir: &Path) -> PathBuf {
        dir.join("attention_maps.parquet")
    }

    /// The images file in `dir`.
    pub fn images_path(dir: &Path) -> PathBuf {
        dir.join("attention_images.parquet")
    }
}

/// Appends `rows` to the attention table at `path`.
pub fn write_attention(path: &Path, rows: &[AttentionRow]) -> Result<(), RunDirError> {
    let df = DataFrame::new(
        rows.len(),
        vec![
            s("model", rows.iter().map(|r| r.model.clone())),
            s("weights", rows.iter().map(|r| r.weights.to_string())),
            s("block", rows.iter().map(|r| r.block.clone())),
            numbers::<u32>("layer", rows.iter().map(|r| r.layer)),
            numbers::<u32>("head", rows.iter().map(|r| r.head)),
            numbers::<u32>("size", rows.iter().map(|r| r.size)),
            numbers::<u32>("grid_h", rows.iter().map(|r| r.grid_h)),
            numbers::<u32>("grid_w", rows.iter().map(|r| r.grid_w)),
            numbers::<f64>("step_h", rows.iter().map(|r| r.step_h)),
            numbers::<f64>("step_w", rows.iter().map(|r| r.step_w)),
            numbers::<f64>("distance", rows.iter().map(|r| r.distance)),
            numbers::<f64>("entropy", rows.iter().map(|r| r.entropy)),
            numbers::<f64>("self_attention", rows.iter().map(|r| r.self_attention)),
            numbers::<u32>("images", rows.iter().map(|r| r.images)),
        ],
    )
    .map_err(|e| RunDirError::format(path)(e.to_string()))?;
    parquet::append(path, df)
}

/// Reads an attention table.
pub fn read_attention(path: &Path) -> Result<Vec<AttentionRow>, RunDirError> {
    let df = parquet::read(path)?;
    let (model, weights, block) = (strs(&df, path, "model")?, strs(&df, path, "weights")?, strs(&df, path, "block")?);
    let u = |n: &str| nums::<UInt32Type>(&df, path, n);
    let f = |n: &str| nums::<Float64Type>(&df, path, n);
    let (layer, head, size, grid_h, grid_w, images) =
        (u("layer")?, u("head")?, u("size")?, u("grid_h")?, u("grid_w")?, u("images")?);
    let (step_h, step_w, distance, entropy, own) =
        (f("step_h")?, f("step_w")?, f("distance")?, f("entropy")?, f("self_attention")?);
    Ok((0..df.height())
        .map(|i| AttentionRow {
            model: model[i].clone(),
            weights: WeightsRef::from(weights[i].as_str()),
            block: block[i].clone(),
            layer: layer[i],
            head: head[i],
            size: size[i],
            grid_h: grid_h[i],
            grid_w: grid_w[i],
            step_h: step_h[i],
            step_w: step_w[i],
            distance: distance[i],
            entropy: entropy[i],
            self_attention: own[i],
            images: images[i],
        })
        .collect())
}

/// Appends `maps` to the attention maps in `dir` (its two files, each rewritten atomically):
/// an image already there (same source and pixels) is reused, and the new maps refer to it.
pub fn write_attention_maps(dir: &Path, maps: &AttentionMaps) -> Result<(), RunDirError> {
    let (ip, mp) = (AttentionMaps::images_path(dir), AttentionMaps::maps_path(dir));
    let mut all = if ip.exists() || mp.exists() { read_attention_maps(dir)? } else { AttentionMaps::default() };
    let mut index = std::collections::HashMap::new();
    for im in &maps.images {
        let same = all
            .images
            .iter()
            .find(|o| o.source == im.source && o.width == im.width && o.height == im.height && o.rgb == im.rgb);
        let at = match same {
            Some(o) => o.image,
            None => {
                let at = all.images.iter().map(|o| o.image + 1).max().unwrap_or(0);
                all.images.push(MapImage { image: at, ..im.clone() });
                at
            }
        };
        index.insert(im.image, at);
    }
    for m in &maps.maps {
        let image = *index.get(&m.image).ok_or_else(|| {
            RunDirError::format(&mp)(format!("a map refers to image {}, which is not among the images given", m.image))
        })?;
        all.maps.push(AttentionMap { image, ..m.clone() });
    }
    write_whole(dir, &all)
}

/// Writes `maps` as the whole content of `dir`'s two files.
fn write_whole(dir: &Path, maps: &AttentionMaps) -> Result<(), RunDirError> {
    let path = AttentionMaps::images_path(dir);
    let im = &maps.images;
    let mut df = DataFrame::new(
        im.len(),
        vec![
            numbers::<u32>("image", im.iter().map(|i| i.image)),
            s("label", im.iter().map(|i| i.label.clone())),
            s("source", im.iter().map(|i| i.source.clone())),
            numbers::<u32>("width", im.iter().map(|i| i.width)),
            numbers::<u32>("height", im.iter().map(|i| i.height)),
            binary("rgb", im.iter().map(|i| i.rgb.clone())),
        ],
    )
    .map_err(|e| RunDirError::format(&path)(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(exvit_common::FileError::at(dir))?;
    parquet::write(&path, &mut df)?;
    let path = AttentionMaps::maps_path(dir);
    let m = &maps.maps;
    let mut df = DataFrame::new(
        m.len(),
        vec![
            s("model", m.iter().map(|r| r.model.clone())),
            s("weights", m.iter().map(|r| r.weights.to_string())),
            numbers::<u32>("image", m.iter().map(|r| r.image)),
            s("block", m.iter().map(|r| r.block.clone())),
            numbers::<u32>("layer", m.iter().map(|r| r.layer)),
            numbers::<u32>("head", m.iter().map(|r| r.head)),
            s("query", m.iter().map(|r| r.query.clone())),
            numbers::<u32>("grid_h", m.iter().map(|r| r.grid_h)),
            numbers::<u32>("grid_w", m.iter().map(|r| r.grid_w)),
            // f32 little-endian: one value per row, whatever the grid.
            binary("values", m.iter().map(|r| r.values.iter().flat_map(|v| v.to_le_bytes()).collect())),
        ],
    )
    .map_err(|e| RunDirError::format(&path)(e.to_string()))?;
    parquet::write(&path, &mut df)
}

/// Reads the attention maps of `dir` (both files must be there); sizes are checked against
/// the grids and images, and every map's image must exist.
pub fn read_attention_maps(dir: &Path) -> Result<AttentionMaps, RunDirError> {
    let path = AttentionMaps::images_path(dir);
    let df = parquet::read(&path)?;
    let bad = RunDirError::format(&path);
    let (image, width, height) = (
        nums::<UInt32Type>(&df, &path, "image")?,
        nums::<UInt32Type>(&df, &path, "width")?,
        nums::<UInt32Type>(&df, &path, "height")?,
    );
    let (label, source, rgb) = (strs(&df, &path, "label")?, strs(&df, &path, "source")?, bytes(&df, &path, "rgb")?);
    let mut images = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let want = width[i] as u64 * height[i] as u64 * 3;
        if rgb[i].len() as u64 != want {
            return Err(bad(format!(
                "image {}: {} bytes of RGB for {}x{} pixels (expected {want})",
                image[i],
                rgb[i].len(),
                width[i],
                height[i]
            )));
        }
        images.push(MapImage {
            image: image[i],
            label: label[i].clone(),
            source: source[i].clone(),
            width: width[i],
            height: height[i],
            rgb: rgb[i].clone(),
        });
    }
    let path = AttentionMaps::maps_path(dir);
    let df = parquet::read(&path)?;
    let bad = RunDirError::format(&path);
    let (model, weights, block, query) = (
        strs(&df, &path, "model")?,
        strs(&df, &path, "weights")?,
        strs(&df, &path, "block")?,
        strs(&df, &path, "query")?,
    );
    let u = |n: &str| nums::<UInt32Type>(&df, &path, n);
    let (image, layer, head, grid_h, grid_w) = (u("image")?, u("layer")?, u("head")?, u("grid_h")?, u("grid_w")?);
    let values = bytes(&df, &path, "values")?;
    let mut maps = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let cells = grid_h[i] as u64 * grid_w[i] as u64;
        if values[i].len() as u64 != cells * 4 {
            return Err(bad(format!(
                "row {i} ({} layer {} head {}): {} bytes of values for a {}x{} grid (expected {})",
                block[i],
                layer[i],
                head[i],
                values[i].len(),
                grid_h[i],
                grid_w[i],
                cells * 4
            )));
        }
        if !images.iter().any(|im| im.image == image[i]) {
            return Err(bad(format!(
                "row {i}: image {} is not in {}",
                image[i],
                AttentionMaps::images_path(dir).display()
            )));
        }
        maps.push(AttentionMap {
            model: model[i].clone(),
            weights: WeightsRef::from(weights[i].as_str()),
            image: image[i],
            block: block[i].clone(),
            layer: layer[i],
            head: head[i],
            query: query[i].clone(),
            grid_h: grid_h[i],
            grid_w: grid_w[i],
            values: values[i].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        });
    }
    Ok(AttentionMaps { images, maps })
}
