//! The report in a real browser: headless Chromium renders each figure and the whole page; a
//! figure that is missing, or renders without any coloured data, fails.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Set `EXVIT_CHROMIUM` to use another binary,
//! or `EXVIT_SKIP_BROWSER=1` to skip on a machine without one (the test then says so).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use exvit_report::{line_chart, render, ReportOptions};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EXVIT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

fn screenshot(browser: &Path, page: &Path, png: &Path, (w, h): (u32, u32)) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={w},{h}"),
            &format!("file://{}", page.display()),
        ])
        .output()
        .expect("run chromium");
    assert!(png.is_file(), "chromium wrote no screenshot: {}", String::from_utf8_lossy(&out.stderr));
}

/// `(ink, coloured)`: shares of pixels that are not near-white, and that are saturated colour
/// (the data: axes and text are grey or black).
fn pixels(png: &Path) -> (f64, f64) {
    let img = image::open(png).unwrap().to_rgb8();
    let n = (img.width() * img.height()) as f64;
    let (mut ink, mut colour) = (0usize, 0usize);
    for p in img.pixels() {
        let [r, g, b] = p.0;
        let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
        ink += usize::from(mn < 200);
        colour += usize::from(mx - mn > 60);
    }
    (ink as f64 / n, colour as f64 / n)
}

fn svg_size(svg: &str) -> (u32, u32) {
    let num = |key: &str| -> u32 {
        let i = svg.find(key).unwrap() + key.len();
        svg[i..].split('"').next().unwrap().parse().unwrap()
    };
    (num("width=\""), num("height=\""))
}

fn render_svg(browser: &Path, dir: &Path, id: &str, svg: &str) -> (f64, f64) {
    let page = dir.join(format!("{id}.html"));
    std::fs::write(&page, format!("<!DOCTYPE html><html><body style=\"margin:0\">{svg}</body></html>")).unwrap();
    let png = dir.join(format!("{id}.png"));
    screenshot(browser, &page, &png, svg_size(svg));
    pixels(&png)
}

#[test]
fn every_figure_renders_with_data_in_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var("EXVIT_SKIP_BROWSER").is_ok() {
            eprintln!("SKIPPED: no chromium (EXVIT_SKIP_BROWSER is set)");
            return;
        }
        panic!("no chromium on PATH: `apt-get install chromium` (as .ci/run does), or set EXVIT_SKIP_BROWSER=1");
    };
    let dir = std::env::temp_dir().join(format!("exvit-report-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let report = render(&common::inputs(), &ReportOptions::default()).unwrap();
    let expected = ["probe-depth", "cka-0", "curves-loss", "curves-top1"];
    for id in expected {
        let f = report.figures.iter().find(|f| f.id == id).unwrap_or_else(|| panic!("figure {id} is missing"));
        let (ink, colour) = render_svg(&browser, &dir, id, &f.svg);
        assert!(ink > 0.01 && colour > 0.003, "figure {id} renders empty: ink {ink:.4}, colour {colour:.4}");
    }
    // The checker can fail: a chart with axes and no data has no coloured pixels.
    let empty = line_chart(
        "empty",
        "no data",
        "x",
        "y",
        None,
        &[],
        Some((0.0, 1.0)),
        plotters::prelude::SeriesLabelPosition::UpperLeft,
        (600, 400),
    )
    .unwrap();
    let (ink, colour) = render_svg(&browser, &dir, "empty", &empty);
    assert!(ink > 0.005 && colour < 0.0005, "an empty chart: ink {ink}, colour {colour}");
    // The whole page: every figure inline, nothing fetched.
    let page = dir.join("report.html");
    exvit_report::write_report(&report, &page).unwrap();
    let png = dir.join("page.png");
    screenshot(&browser, &page, &png, (1100, 5200));
    let (ink, colour) = pixels(&png);
    assert!(ink > 0.02 && colour > 0.01, "the page renders nearly blank: ink {ink}, colour {colour}");
    // EXVIT_KEEP=1 keeps the screenshots (the path is printed with --nocapture).
    if std::env::var("EXVIT_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("screenshots in {}", dir.display());
    }
}
