//! SVG plots with plotters: line charts (probe accuracy against depth, training curves) and
//! heatmaps (CKA). Each returns one `<svg>` element as a string.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;

/// Series colours (Tableau 10), picked in order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// How a series' line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStyle {
    /// A solid line (trained models, training loss).
    Solid,
    /// Dashes (random init, EMA, validation).
    Dashed,
    /// Dots (reference levels).
    Dotted,
    /// No line: the points alone (a scatter).
    None,
}

/// How a series' points are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// No marker.
    None,
    /// A filled circle.
    Filled,
    /// A hollow circle.
    Hollow,
}

/// One line of a chart. Its legend entry is drawn the same way (line style, colour, marker).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Index into [`PALETTE`].
    pub color: usize,
    /// The line.
    pub line: LineStyle,
    /// The points' marker.
    pub marker: Marker,
    /// `(x, y)` points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Pixels between dashes and dots: `(on, off)`.
fn pattern(line: LineStyle) -> Option<(u32, u32)> {
    match line {
        LineStyle::Solid | LineStyle::None => None,
        LineStyle::Dashed => Some((7, 4)),
        LineStyle::Dotted => Some((2, 3)),
    }
}

/// Legend layout under the plot: entries in columns of `LEGEND_COL` pixels, rows of
/// `LEGEND_ROW`.
const LEGEND_COL: u32 = 300;
const LEGEND_ROW: u32 = 20;

fn legend_height(width: u32, n: usize) -> u32 {
    if n == 0 {
        return 0;
    }
    let cols = (width.saturating_sub(24) / LEGEND_COL).max(1) as usize;
    n.div_ceil(cols) as u32 * LEGEND_ROW + 16
}

/// Draws the legend in its own area under the plot (never over the data): each entry is a
/// sample of its series (colour, line style, marker) and its name.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let cols = (w.saturating_sub(24) / LEGEND_COL).max(1) as usize;
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    for (k, s) in series.iter().enumerate() {
        let (col, row) = ((k % cols) as i32, (k / cols) as i32);
        let (x, y) = (24 + col * LEGEND_COL as i32, 8 + row * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2);
        let color = PALETTE[s.color % PALETTE.len()];
        let pts = [(x, y), (x + 28, y)];
        match pattern(s.line) {
            _ if s.line == LineStyle::None => {}
            None => area.draw(&PathElement::new(pts.to_vec(), color.stroke_width(2))).map_err(|e| e.to_string())?,
            Some((on, off)) => {
                let mut a = x;
                while a < x + 28 {
                    let b = (a + on as i32).min(x + 28);
                    area.draw(&PathElement::new(vec![(a, y), (b, y)], color.stroke_width(2)))
                        .map_err(|e| e.to_string())?;
                    a = b + off as i32;
                }
            }
        }
        match s.marker {
            Marker::None => {}
            Marker::Filled => area.draw(&Circle::new((x + 14, y), 3, color.filled())).map_err(|e| e.to_string())?,
            Marker::Hollow => {
                area.draw(&Circle::new((x + 14, y), 3, WHITE.filled())).map_err(|e| e.to_string())?;
                area.draw(&Circle::new((x + 14, y), 3, color.stroke_width(2))).map_err(|e| e.to_string())?;
            }
        }
        let text_style = font.clone().pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(s.name.clone(), (x + 36, y), text_style)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn err(figure: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Plot { figure: figure.to_string(), message }
}

fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    (lo - pad * span, hi + pad * span)
}

/// A line chart. `x_labels`, when given, names the integer x positions (a categorical axis).
/// `size` is the plot's; the legend is drawn below it, outside the data, so the SVG is taller
/// by the legend's rows.
#[allow(clippy::too_many_arguments)]
pub fn line_chart(
    id: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: Option<&[String]>,
    series: &[Series],
    y_fixed: Option<(f64, f64)>,
    size: (u32, u32),
) -> Result<String, ReportError> {
    let e = err(id);
    let mut svg = String::new();
    {
        let full = (size.0, size.1 + legend_height(size.0, series.len()));
        let whole = SVGBackend::with_string(&mut svg, full).into_drawing_area();
        whole.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (root, legend_area) = whole.split_vertically(size.1);
        let (x0, x1) = match x_labels {
            Some(l) => (-0.3, l.len().max(1) as f64 - 0.7),
            None => range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), 0.02),
        };
        let (y0, y1) = y_fixed.unwrap_or_else(|| range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), 0.08));
        // Rotated category labels (11 px sans-serif, ~4.5 px a character) above the axis title.
        let bottom = match x_labels {
            Some(l) => (40 + 9 * l.iter().map(|t| t.chars().count()).max().unwrap_or(0) as u32 / 2).clamp(110, 240),
            None => 45,
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(bottom)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(x.to_string()))?;
        let categorical = x_labels.is_some();
        let fmt = move |x: &f64| -> String {
            if categorical {
                String::new()
            } else {
                format!("{x}")
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc).y_desc(y_desc).x_label_formatter(&fmt).light_line_style(RGBColor(235, 235, 235));
        if let Some(l) = x_labels {
            mesh.x_labels(l.len().max(2));
        }
        mesh.draw().map_err(|x| e(x.to_string()))?;
        if let Some(l) = x_labels {
            rotated_labels(
                &root,
                l.iter().enumerate().map(|(i, t)| (chart.backend_coord(&(i as f64, y0)), t.as_str())),
            )
            .map_err(&e)?;
        }
        for s in series {
            let color = PALETTE[s.color % PALETTE.len()];
            let style = color.stroke_width(2);
            match pattern(s.line) {
                _ if s.line == LineStyle::None => {}
                None => {
                    chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), style))
                        .map_err(|x| e(x.to_string()))?;
                }
                Some((on, off)) => {
                    chart
                        .draw_series(DashedLineSeries::new(s.points.iter().copied(), on, off, style))
                        .map_err(|x| e(x.to_string()))?;
                }
            }
            match s.marker {
                Marker::None => {}
                Marker::Filled => {
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|x| e(x.to_string()))?;
                }
                Marker::Hollow => {
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, WHITE.filled())))
                        .map_err(|x| e(x.to_string()))?;
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.stroke_width(2))))
                        .map_err(|x| e(x.to_string()))?;
                }
            }
        }
        draw_legend(&legend_area, series).map_err(&e)?;
        whole.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Colour of a value in `[0, 1]`: white → dark blue.
fn blues(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// A heatmap of `values[row][col]` in `[0, 1]`, with row and column names and each value
/// written in its cell.
pub fn heatmap(
    id: &str,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    size: (u32, u32),
) -> Result<String, ReportError> {
    let e = err(id);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (nr, nc) = (rows.len().max(1), cols.len().max(1));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(130)
            .y_label_area_size(170)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(|x| e(x.to_string()))?;
        let rl = rows.to_vec();
        let xf = |_: &f64| String::new();
        let yf = move |y: &f64| {
            let i = (y - 0.5).round() as usize;
            // Row 0 at the top.
            rl.len()
                .checked_sub(i + 1)
                .and_then(|j| rl.get(j))
                .filter(|_| (y.fract() - 0.5).abs() < 1e-6)
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nc + 1)
            .y_labels(2 * nr + 1)
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .y_label_style(("sans-serif", 11))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        rotated_labels(
            &root,
            cols.iter().enumerate().map(|(j, t)| (chart.backend_coord(&(j as f64 + 0.5, 0.0)), t.as_str())),
        )
        .map_err(&e)?;
        for (i, row) in values.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let y = (nr - 1 - i) as f64;
                let fill = if v.is_finite() { blues(v) } else { RGBColor(220, 220, 220) };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(j as f64, y), (j as f64 + 1.0, y + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(|x| e(x.to_string()))?;
                if nc <= 16 {
                    let ink = if v > 0.55 { WHITE } else { BLACK };
                    let text = if v.is_finite() { format!("{v:.2}") } else { "–".into() };
                    chart
                        .draw_series(std::iter::once(Text::new(
                            text,
                            (j as f64 + 0.3, y + 0.6),
                            ("sans-serif", 10).into_font().color(&ink),
                        )))
                        .map_err(|x| e(x.to_string()))?;
                }
            }
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(svg)
}

/// Draws `labels` at pixel positions, rotated to read downwards, starting just below each point.
fn rotated_labels<'a, DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    labels: impl Iterator<Item = ((i32, i32), &'a str)>,
) -> Result<(), String> {
    let style = ("sans-serif", 11)
        .into_font()
        .transform(FontTransform::Rotate90)
        .into_text_style(root)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for ((x, y), text) in labels {
        root.draw(&Text::new(text.to_string(), (x, y + 8), style.clone())).map_err(|e| e.to_string())?;
    }
    Ok(())
}
