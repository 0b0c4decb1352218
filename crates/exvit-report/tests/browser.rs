//! The report in a real browser: headless Chromium renders each figure and the whole page; a
//! figure that is missing, or renders without any coloured data, fails.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it). Where it is
//! missing the test is skipped with a loud message, unless `EXVIT_REQUIRE_BROWSER=1` (set by
//! `.ci/run`), which makes a missing browser a failure. `EXVIT_CHROMIUM` names another binary.

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

/// What the page's layout measures at a window width.
#[derive(Debug)]
struct Layout {
    /// The right edge of the rightmost element (CSS px), a scrolling table box counted as its
    /// box.
    page: u32,
    /// The widest rendered `<svg>` (CSS px).
    widest_svg: f64,
    /// How many `<svg>` elements rendered.
    svgs: usize,
}

/// Loads a copy of `page` laid out `width` CSS px wide, with a measuring script appended (the
/// report itself has none), and reads the measurements back from the DOM Chromium dumps.
/// Headless Chromium will not open a window under 500 px, so the width is set on the root
/// element (the page has no media queries: the layout is the same as in a window that wide).
fn layout_at(browser: &Path, page: &Path, dir: &Path, width: u32) -> Layout {
    let html = std::fs::read_to_string(page)
        .unwrap()
        .replace("</head>", &format!("<style>html{{width:{width}px}}</style></head>"));
    let probe = "<script>window.addEventListener('load',()=>{const s=[...document.querySelectorAll('svg')];\
        const p=document.createElement('pre');p.id='layout';\
        const els=[...document.body.querySelectorAll('*')].filter(e=>e.id!=='layout'&&!e.closest('svg')&&(!e.parentElement.closest('.scroll')));\
        p.textContent=[Math.ceil(Math.max(0,...els.map(e=>e.getBoundingClientRect().right))),Math.max(0,...s.map(e=>e.getBoundingClientRect().width)),s.length].join(' ');\
        document.body.appendChild(p);});</script></body>";
    let copy = dir.join(format!("layout-{width}.html"));
    std::fs::write(&copy, html.replace("</body>", probe)).unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--window-size={},900", width.max(500)),
            "--virtual-time-budget=2000",
            "--dump-dom",
            &format!("file://{}", copy.display()),
        ])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let i = dom.find("id=\"layout\">").unwrap_or_else(|| panic!("no layout in the DOM: {dom:.400}")) + 12;
    let v: Vec<f64> = dom[i..].split('<').next().unwrap().split(' ').map(|x| x.parse().unwrap()).collect();
    Layout { page: v[0] as u32, widest_svg: v[1], svgs: v[2] as usize }
}

#[test]
fn every_figure_renders_with_data_in_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var("EXVIT_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("no chromium on PATH and EXVIT_REQUIRE_BROWSER=1: `apt-get install chromium`");
        }
        eprintln!(
            "\n{bar}\nSKIPPED every_figure_renders_with_data_in_chromium: no chromium on PATH.\n\
             The report's figures were not checked in a browser. `apt-get install chromium` to run it\n\
             (CI sets EXVIT_REQUIRE_BROWSER=1, where a missing browser fails).\n{bar}\n",
            bar = "!".repeat(78)
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("exvit-report-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let report = render(&common::inputs_with_attention(), &ReportOptions::default()).unwrap();
    let expected = [
        "probe-depth",
        "cka-0",
        "curves-loss",
        "curves-top1",
        "attention-distance",
        "attention-entropy",
        "attention-maps-stages-2-1",
        "attention-maps-stages-3-1",
    ];
    for id in expected {
        let f = report.figures.iter().find(|f| f.id == id).unwrap_or_else(|| panic!("figure {id} is missing"));
        let (ink, colour) = render_svg(&browser, &dir, id, &f.svg);
        assert!(ink > 0.01 && colour > 0.003, "figure {id} renders empty: ink {ink:.4}, colour {colour:.4}");
    }
    // The checker can fail: a chart with axes and no data has no coloured pixels.
    let empty = line_chart("empty", "no data", "x", "y", None, &[], Some((0.0, 1.0)), (600, 400)).unwrap();
    let (ink, colour) = render_svg(&browser, &dir, "empty", &empty);
    assert!(ink > 0.005 && colour < 0.0005, "an empty chart: ink {ink}, colour {colour}");
    // The whole page: every figure inline, nothing fetched.
    let page = dir.join("report.html");
    exvit_report::write_report(&report, &page).unwrap();
    let png = dir.join("page.png");
    screenshot(&browser, &page, &png, (1100, 5200));
    let (ink, colour) = pixels(&png);
    assert!(ink > 0.02 && colour > 0.01, "the page renders nearly blank: ink {ink}, colour {colour}");
    // Desktop and phone widths: nothing wider than the window (figures scale down, wide tables
    // scroll inside their own box), so the page never scrolls sideways.
    for width in [1280u32, 390] {
        let layout = layout_at(&browser, &page, &dir, width);
        assert!(layout.page <= width, "at {width} px the page is {} px wide: {layout:?}", layout.page);
        assert!(layout.widest_svg <= width as f64, "at {width} px a figure is {} px wide", layout.widest_svg);
        assert_eq!(layout.svgs, report.figures.len(), "at {width} px: {layout:?}");
        let sized = dir.join(format!("layout-{width}.html"));
        screenshot(&browser, &sized, &dir.join(format!("page-{width}.png")), (width.max(500), 3000));
    }
    // EXVIT_KEEP=1 keeps the screenshots (the path is printed with --nocapture).
    if std::env::var("EXVIT_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("screenshots in {}", dir.display());
    }
}
