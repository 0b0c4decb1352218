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

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Index into [`PALETTE`].
    pub color: usize,
    /// Dashed (EMA, references).
    pub dashed: bool,
    /// `(x, y)` points, in x order.
    pub points: Vec<(f64, f64)>,
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
#[allow(clippy::too_many_arguments)]
pub fn line_chart(
    id: &str,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: Option<&[String]>,
    series: &[Series],
    y_fixed: Option<(f64, f64)>,
    legend: SeriesLabelPosition,
    size: (u32, u32),
) -> Result<String, ReportError> {
    let e = err(id);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (x0, x1) = match x_labels {
            Some(l) => (-0.3, l.len().max(1) as f64 - 0.7),
            None => range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), 0.02),
        };
        let (y0, y1) = y_fixed.unwrap_or_else(|| range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), 0.08));
        let bottom = if x_labels.is_some() { 110 } else { 45 };
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
            let anno = if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, style))
                    .map_err(|x| e(x.to_string()))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style)).map_err(|x| e(x.to_string()))?
            };
            anno.label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            if !s.dashed {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(x.to_string()))?;
            }
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
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
