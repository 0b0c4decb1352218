//! The attention section: mean attention distance and entropy against depth (one point per
//! head and layer), the attention maps drawn over their images, and the per-layer table, from
//! `attention.parquet` and `attention_maps.parquet` rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use exvit_rundir::{AttentionMap, AttentionRow, MapImage, WeightsRef};

use crate::collect::Inputs;
use crate::figures::{depth_key, probe_label, Figure};
use crate::page::{esc, Section};
use crate::plot::{line_chart, LineStyle, Marker, Series, PALETTE};
use crate::stats::mean_std;
use crate::tables::Table;
use crate::ReportError;

/// The layers of `rows` in forward order (their taps, `stages.S.B.transformer.K`).
fn layers(rows: &[AttentionRow]) -> Vec<String> {
    let mut taps: Vec<(f64, String)> = Vec::new();
    for r in rows {
        let t = r.tap();
        if !taps.iter().any(|(_, n)| *n == t) {
            taps.push((depth_key(&t), t));
        }
    }
    taps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    taps.into_iter().map(|(_, t)| t).collect()
}

/// `(model, label)` groups in order of first appearance: a model's trained weights (any
/// seed) are one group, its random init another.
fn groups(rows: &[AttentionRow]) -> Vec<(String, String)> {
    let mut g: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.model.clone(), probe_label(&r.model, &r.weights));
        if !g.contains(&k) {
            g.push(k);
        }
    }
    g
}

/// A figure of `value` against depth: per group, every head of every seed as a point (filled:
/// trained, hollow: random init) and the mean over heads and seeds as a line (solid: trained,
/// dashed: random init), groups side by side within a layer.
fn against_depth(
    rows: &[AttentionRow],
    color_of: &dyn Fn(&str) -> usize,
    id: &str,
    title: &str,
    y_desc: &str,
    value: fn(&AttentionRow) -> f64,
) -> Result<String, ReportError> {
    let names = layers(rows);
    let groups = groups(rows);
    let width = 0.5;
    let mut series = Vec::new();
    for (g, (model, label)) in groups.iter().enumerate() {
        let dx = if groups.len() > 1 { width * (g as f64 / (groups.len() - 1) as f64 - 0.5) } else { 0.0 };
        let init = label.ends_with("(random init)");
        let mut heads = Vec::new();
        let mut means = Vec::new();
        for (i, t) in names.iter().enumerate() {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| r.model == *model && probe_label(&r.model, &r.weights) == *label && r.tap() == *t)
                .map(value)
                .filter(|v| v.is_finite())
                .collect();
            heads.extend(v.iter().map(|&y| (i as f64 + dx, y)));
            if !v.is_empty() {
                means.push((i as f64 + dx, mean_std(&v).0));
            }
        }
        let color = color_of(model);
        series.push(Series {
            name: format!("{label}: mean over heads"),
            color,
            line: if init { LineStyle::Dashed } else { LineStyle::Solid },
            marker: Marker::None,
            points: means,
        });
        series.push(Series {
            name: format!("{label}: each head"),
            color,
            line: LineStyle::None,
            marker: if init { Marker::Hollow } else { Marker::Filled },
            points: heads,
        });
    }
    line_chart(id, title, "transformer layer (forward order)", y_desc, Some(&names), &series, None, (900, 560))
}

/// The attention figures: distance and entropy against depth, and one map figure per block.
pub(crate) fn attention_figures(inputs: &Inputs, color_of: &dyn Fn(&str) -> usize) -> Result<Vec<Figure>, ReportError> {
    let mut figures = Vec::new();
    let rows = &inputs.attention;
    if !rows.is_empty() {
        let images = rows.iter().map(|r| r.images).max().unwrap_or(0);
        let sizes: Vec<String> = {
            let mut s: Vec<u32> = rows.iter().map(|r| r.size).collect();
            s.sort_unstable();
            s.dedup();
            s.iter().map(|s| format!("{s}x{s}")).collect()
        };
        figures.push(Figure {
            id: "attention-distance".into(),
            title: "Mean attention distance against depth".into(),
            caption: format!(
                "Per head, the attention-weighted distance from a query patch to the patches it attends to, in input pixels at {} (Dosovitskiy et al. 2021, Fig. 7), averaged over every query of up to {images} validation images. Points: each head (of each seed); lines: the mean over heads. Trained models filled and solid, random init hollow and dashed. MobileViT's attention runs among the patches of its unfolded map, so one patch step is the patch side times the stage's stride; see the attention table for each layer's grid and the distance uniform attention would give.",
                sizes.join(", ")
            ),
            svg: against_depth(
                rows,
                color_of,
                "attention-distance",
                "Mean attention distance against depth",
                "mean attention distance (input px)",
                |r| r.distance,
            )?,
        });
        figures.push(Figure {
            id: "attention-entropy".into(),
            title: "Attention entropy against depth".into(),
            caption: "Per head, the mean entropy (nats) of a query's attention over the patches: 0 when it attends to one patch, ln N when uniform over N patches (the attention table gives ln N per layer). Points: each head; lines: the mean over heads; trained filled and solid, random init hollow and dashed.".into(),
            svg: against_depth(
                rows,
                color_of,
                "attention-entropy",
                "Attention entropy against depth",
                "entropy (nats)",
                |r| r.entropy,
            )?,
        });
    }
    figures.extend(map_figures(inputs)?);
    Ok(figures)
}

/// The distance uniform attention gives on a layer's grid: the mean over query-key pairs of
/// their distance, input pixels.
pub fn uniform_distance(grid: (u32, u32), step: (f64, f64)) -> f64 {
    let (h, w) = (grid.0 as i64, grid.1 as i64);
    let n = (h * w) as f64;
    let mut total = 0.0;
    // Sum over offsets, each weighted by how many pairs have it.
    for dr in -(h - 1)..h {
        for dc in -(w - 1)..w {
            let pairs = ((h - dr.abs()) * (w - dc.abs())) as f64;
            total += pairs * ((dr as f64 * step.0).powi(2) + (dc as f64 * step.1).powi(2)).sqrt();
        }
    }
    total / (n * n)
}

/// Per model, weights group and layer: the grid, the step, and distance, entropy and
/// self-attention as mean ± std over heads (and seeds), with uniform attention's values.
pub(crate) fn attention_table(inputs: &Inputs) -> Option<Table> {
    let rows = &inputs.attention;
    if rows.is_empty() {
        return None;
    }
    let names = layers(rows);
    let mut out = Vec::new();
    for (model, label) in groups(rows) {
        for t in &names {
            let sel: Vec<&AttentionRow> = rows
                .iter()
                .filter(|r| r.model == model && probe_label(&r.model, &r.weights) == label && r.tap() == *t)
                .collect();
            let Some(first) = sel.first() else { continue };
            let seeds: std::collections::BTreeSet<&WeightsRef> = sel.iter().map(|r| &r.weights).collect();
            let stat = |f: fn(&AttentionRow) -> f64, digits: usize| {
                let v: Vec<f64> = sel.iter().map(|r| f(r)).collect();
                let (m, s) = mean_std(&v);
                if v.len() > 1 {
                    format!("{m:.digits$} ± {s:.digits$}")
                } else {
                    format!("{m:.digits$}")
                }
            };
            let n = (first.grid_h * first.grid_w) as f64;
            out.push(vec![
                label.clone(),
                t.clone(),
                format!("{}", seeds.len()),
                format!("{}x{}", first.grid_h, first.grid_w),
                format!("{:.1}", first.step_h),
                stat(|r| r.distance, 1),
                format!("{:.1}", uniform_distance((first.grid_h, first.grid_w), (first.step_h, first.step_w))),
                stat(|r| r.entropy, 3),
                format!("{:.3}", n.ln()),
                stat(|r| r.self_attention, 3),
                format!("{}", first.images),
            ]);
        }
    }
    Some(Table {
        section: Section::Analyses,
        title: "Attention by layer".into(),
        note: "From attention.parquet: per transformer layer, the patch grid its attention runs over and the input pixels between neighbouring patches; mean attention distance (input px), entropy (nats) and self-attention as mean ± std over heads (and over the weights files counted: seeds); `uniform` gives what attention spread evenly over the grid would score.".into(),
        header: [
            "model", "layer", "weights files", "grid", "px/patch", "distance (px)", "uniform (px)", "entropy (nats)",
            "uniform: ln N", "self-attention", "images",
        ]
        .map(String::from)
        .to_vec(),
        rows: out,
    })
}

/// Cell side of a map, pixels.
const CELL: u32 = 72;
/// Space under a row of maps (for each map's peak).
const ROW_GAP: u32 = 18;
/// Images drawn per figure.
const MAX_IMAGES: usize = 2;
/// Largest side an image is stored at in the SVG (box-downsampled above it).
const MAX_SIDE: u32 = 96;

/// One figure per block: rows are (model, image) for each model's first trained weights (its
/// random init when it has none), columns the image, each head's attention from the centre
/// patch, and each head's attention received averaged over queries.
fn map_figures(inputs: &Inputs) -> Result<Vec<Figure>, ReportError> {
    let maps = &inputs.maps;
    if maps.maps.is_empty() {
        return Ok(Vec::new());
    }
    // One weights file per model: the first trained one, else the first.
    let mut chosen: Vec<(String, WeightsRef)> = Vec::new();
    for m in &maps.maps {
        match chosen.iter_mut().find(|(model, _)| *model == m.model) {
            Some((_, w)) if w.is_init() && !m.weights.is_init() => *w = m.weights.clone(),
            Some(_) => {}
            None => chosen.push((m.model.clone(), m.weights.clone())),
        }
    }
    let mut blocks: Vec<String> = Vec::new();
    for m in &maps.maps {
        if !blocks.contains(&m.block) {
            blocks.push(m.block.clone());
        }
    }
    blocks.sort_by(|a, b| depth_key(&format!("{a}.norm")).total_cmp(&depth_key(&format!("{b}.norm"))));
    let mut images: Vec<u32> = maps.maps.iter().map(|m| m.image).collect();
    images.sort_unstable();
    images.dedup();
    images.truncate(MAX_IMAGES);
    let mut figures = Vec::new();
    for block in &blocks {
        let id = format!("attention-maps-{}", block.replace('.', "-"));
        let mut picked: BTreeMap<(usize, u32, String, u32), &AttentionMap> = BTreeMap::new();
        let mut heads = 0;
        for m in &maps.maps {
            let Some(g) = chosen.iter().position(|(model, w)| *model == m.model && *w == m.weights) else { continue };
            if m.block == *block && m.layer == 0 && images.contains(&m.image) {
                heads = heads.max(m.head + 1);
                picked.insert((g, m.image, m.query.clone(), m.head), m);
            }
        }
        if picked.is_empty() {
            continue;
        }
        let svg = maps_svg(&id, block, &chosen, &images, heads, &picked, &maps.images);
        let grid = picked.values().next().map_or(String::new(), |m| format!("{}x{}", m.grid_h, m.grid_w));
        figures.push(Figure {
            id,
            title: format!("Attention maps of {block}, layer 0"),
            caption: format!(
                "Each row: one model's weights on one validation image (as the model saw it). First the image, then each head's attention from the centre patch (outlined), then each head's attention received, averaged over every query, over the {grid} patch grid (averaged over the positions inside a patch). Each map is scaled from its smallest value (clear) to its largest (red); under it, its peak: its largest value over uniform attention's 1/N (1.0x: uniform). One weights file per model (its first trained seed)."
            ),
            svg,
        });
    }
    Ok(figures)
}

type Picked<'a> = BTreeMap<(usize, u32, String, u32), &'a AttentionMap>;

fn maps_svg(
    id: &str,
    block: &str,
    chosen: &[(String, WeightsRef)],
    images: &[u32],
    heads: u32,
    picked: &Picked<'_>,
    all_images: &[MapImage],
) -> String {
    let label_w = 190u32;
    let cols = 1 + 2 * heads;
    let top = 46u32;
    let rows: Vec<(usize, u32)> = (0..chosen.len())
        .flat_map(|g| images.iter().map(move |&i| (g, i)))
        .filter(|(g, i)| picked.keys().any(|k| k.0 == *g && k.1 == *i))
        .collect();
    let width = label_w + cols * (CELL + 4) + 8;
    let height = top + rows.len() as u32 * (CELL + ROW_GAP) + 8;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" id="{id}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = write!(s, r#"<rect width="{width}" height="{height}" fill="white"/><defs>"#);
    for &i in images {
        if let Some(im) = all_images.iter().find(|m| m.image == i) {
            let (w, h, rgb) = downsample(im, MAX_SIDE);
            let _ = write!(
                s,
                r#"<image id="{id}-img{i}" width="{CELL}" height="{CELL}" preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,{}"/>"#,
                base64(&png(w, h, &rgb))
            );
        }
    }
    s.push_str("</defs>");
    let _ = write!(s, r#"<text x="8" y="16" font-size="15">Attention maps: {}</text>"#, esc(block));
    let col_x = |c: u32| label_w + c * (CELL + 4);
    let header = |c: u32| -> String {
        if c == 0 {
            "image".into()
        } else if c <= heads {
            format!("head {} · centre", c - 1)
        } else {
            format!("head {} · mean", c - 1 - heads)
        }
    };
    for c in 0..cols {
        let _ = write!(s, r#"<text x="{}" y="{}" font-size="10">{}</text>"#, col_x(c), top - 8, header(c));
    }
    for (r, &(g, image)) in rows.iter().enumerate() {
        let y = top + r as u32 * (CELL + ROW_GAP);
        let (model, w) = &chosen[g];
        let label = all_images.iter().find(|m| m.image == image).map_or(String::new(), |m| m.label.clone());
        let _ = write!(s, r#"<text x="8" y="{}" font-size="11">{}</text>"#, y + 16, esc(&probe_label(model, w)));
        let _ = write!(
            s,
            r##"<text x="8" y="{}" font-size="11" fill="#555">image {image}: {}</text>"##,
            y + 32,
            esc(&label)
        );
        let _ = write!(s, r##"<use href="#{id}-img{image}" x="{}" y="{y}"/>"##, col_x(0));
        for c in 1..cols {
            let (query, head) = if c <= heads { ("centre", c - 1) } else { ("mean", c - 1 - heads) };
            let x = col_x(c);
            let _ = write!(s, r##"<use href="#{id}-img{image}" x="{x}" y="{y}" opacity="0.55"/>"##);
            let Some(m) = picked.get(&(g, image, query.to_string(), head)) else { continue };
            let (gh, gw) = (m.grid_h.max(1), m.grid_w.max(1));
            // Min-max scaled per map (near-uniform maps would otherwise be one flat colour);
            // how peaked the map is shows underneath: its largest value over uniform's 1/N.
            let max = m.values.iter().copied().fold(f32::MIN, f32::max);
            let min = m.values.iter().copied().fold(f32::MAX, f32::min);
            let span = (max - min).max(1e-12);
            let (cw, ch) = (CELL as f64 / gw as f64, CELL as f64 / gh as f64);
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" font-size="10" fill="#444">peak {:.1}x</text>"##,
                x,
                y + CELL + 11,
                max * m.values.len() as f32
            );
            for (k, v) in m.values.iter().enumerate() {
                let (i, j) = (k as u32 / gw, k as u32 % gw);
                let a = ((v - min) / span).clamp(0.0, 1.0) * 0.75;
                let _ = write!(
                    s,
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="rgb(200,20,20)" fill-opacity="{a:.3}"/>"#,
                    x as f64 + j as f64 * cw,
                    y as f64 + i as f64 * ch,
                    cw,
                    ch
                );
            }
            if query == "centre" {
                let k = (gh / 2) * gw + gw / 2;
                let (i, j) = (k / gw, k % gw);
                let _ = write!(
                    s,
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                    x as f64 + j as f64 * cw,
                    y as f64 + i as f64 * ch,
                    cw,
                    ch,
                    hex(PALETTE[0])
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// `im` box-averaged down to at most `max` pixels a side (an integer factor): `(w, h, rgb)`.
fn downsample(im: &MapImage, max: u32) -> (u32, u32, Vec<u8>) {
    let f = im.width.max(im.height).div_ceil(max).max(1);
    let (w, h) = (im.width / f, im.height / f);
    if f == 1 || w == 0 || h == 0 {
        return (im.width, im.height, im.rgb.clone());
    }
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        sum += im.rgb[(((y * f + dy) * im.width + x * f + dx) * 3 + c) as usize] as u32;
                    }
                }
                out.push((sum / (f * f)) as u8);
            }
        }
    }
    (w, h, out)
}

/// An 8-bit RGB PNG.
fn png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().expect("a PNG header into memory");
        writer.write_image_data(rgb).expect("PNG data into memory");
    }
    out
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn uniform_distance_by_brute_force() {
        for (grid, step) in [((1, 1), (8.0, 8.0)), ((2, 2), (16.0, 16.0)), ((3, 5), (10.0, 12.5))] {
            let cells: Vec<(f64, f64)> =
                (0..grid.0 * grid.1).map(|i| ((i / grid.1) as f64, (i % grid.1) as f64)).collect();
            let mut t = 0.0;
            for a in &cells {
                for b in &cells {
                    t += (((a.0 - b.0) * step.0).powi(2) + ((a.1 - b.1) * step.1).powi(2)).sqrt();
                }
            }
            let want = t / (cells.len() * cells.len()) as f64;
            assert!((uniform_distance(grid, step) - want).abs() < 1e-9, "{grid:?}");
        }
        // A 2x2 grid 16 px apart: (0 + 16 + 16 + 16√2) / 4.
        assert!((uniform_distance((2, 2), (16.0, 16.0)) - 16.0 * (2.0 + 2f64.sqrt()) / 4.0).abs() < 1e-9);
    }

    #[test]
    fn downsample_averages_boxes() {
        let im = MapImage {
            image: 0,
            label: String::new(),
            source: String::new(),
            width: 4,
            height: 2,
            rgb: (0..24).map(|v| v as u8 * 10).collect(),
        };
        let (w, h, rgb) = downsample(&im, 2);
        assert_eq!((w, h), (2, 1));
        // Pixel (0, 0) averages pixels (0,0), (1,0), (0,1), (1,1): red 0, 30, 120, 150 -> 75.
        assert_eq!(rgb[0], 75);
    }
}
