//! The report's numbers and structure (the browser test checks what it looks like).

mod common;

use std::path::PathBuf;

use exvit_report::depth_key;
use exvit_report::{render, write_report, ReportOptions};

#[test]
fn tables_hold_means_stds_and_paired_deltas() {
    let r = render(&common::inputs(), &ReportOptions::default()).unwrap();
    let md = &r.markdown;
    // mobilevit_xxs: 60, 62 → 61.00 ± 1.41; exmobilevit_xxs: 61, 64 → 62.50 ± 2.12.
    assert!(md.contains("| mobilevit_xxs | 1272024 | 2 | 61.00 ± 1.41 |"), "{md}");
    assert!(md.contains("| exmobilevit_xxs | 1282024 | 2 | 62.50 ± 2.12 |"), "{md}");
    // Paired by seed: (61-60, 64-62) = (1, 2) → +1.50 ± 0.71.
    assert!(md.contains("+1.50 ± 0.71 (paired, n=2)"), "{md}");
    // (60.5-60, 61.5-62) = (0.5, -0.5) → +0.00 ± 0.71.
    assert!(md.contains("+0.00 ± 0.71 (paired, n=2)"), "{md}");
    assert!(md.contains("| mobilevit_xxs_head432 |"));
    // Paired comparisons. Ex − base: per-seed (1, 2) → +1.50, t interval ± 12.706·0.7071/√2 =
    // ± 6.353. Over images: 6 of 200 images differ by half an image each → mean 1.5 points,
    // standard error sqrt((75 − 1.5²)/200) = 0.60, so the bootstrap interval lies inside (0, 3.5).
    let row = md.lines().find(|l| l.starts_with("| exmobilevit_xxs − mobilevit_xxs |")).expect(md);
    assert!(row.starts_with("| exmobilevit_xxs − mobilevit_xxs | 2 | +1.50 | +1.50 [-4.85, +7.85] | +1.50 ["), "{row}");
    let boot: Vec<f64> = row
        .rsplit('[')
        .next()
        .unwrap()
        .trim_end_matches([']', '|', ' '])
        .split(", ")
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(boot[0] > 0.0 && boot[0] < 1.5 && boot[1] > 1.5 && boot[1] < 3.5, "{row}");
    // Ex − control: (61 − 60.5, 64 − 61.5) = (0.5, 2.5) → +1.50 ± 12.706·1.4142/√2.
    assert!(md.contains("| exmobilevit_xxs − mobilevit_xxs_head432 | 2 | +1.50 | +1.50 [-11.21, +14.21] |"), "{md}");
    assert!(md.contains("| mobilevit_xxs_head432 − mobilevit_xxs | 2 | +0.00 |"), "{md}");
    // The probe table: one row per tap in forward order, one column per model and weights.
    assert!(md.contains("| tap | pooling | exmobilevit_xxs (random init) | exmobilevit_xxs (trained) | mobilevit_xxs (random init) | mobilevit_xxs (trained) |"), "{md}");
    assert!(md.contains("| stem | gap | 30.00 | 36.00 | 30.00 | 35.00 |"), "{md}");
    assert!(md.contains("| pooled | none | 25.00 | 61.00 | 25.00 | 60.00 |"), "{md}");
    assert!(md.find("| stem | gap |").unwrap() < md.find("| final_conv | gap |").unwrap());
    assert!(md.contains("baseline"));
    // Another baseline.
    let opts = ReportOptions { baseline: Some("exmobilevit_xxs".into()), ..Default::default() };
    let r2 = render(&common::inputs(), &opts).unwrap();
    assert!(r2.markdown.contains("-1.50 ± 0.71 (paired, n=2)"), "{}", r2.markdown);
    // Every figure is there, in the HTML and linked from the Markdown.
    let ids: Vec<&str> = r.figures.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["probe-depth", "cka-0", "curves-loss", "curves-top1"]);
    for id in ids {
        assert!(r.html.contains(&format!("data-figure=\"{id}\"")));
        assert!(md.contains(&format!("(FIGURES/{id}.svg)")));
    }
    assert!(r.html.contains("abc123") && r.html.contains("Test CPU"), "provenance");
    // Self-contained: nothing is fetched (the only URL is the SVG namespace).
    for needle in ["src=", "href=", "<link", "<script", "@import", "url("] {
        assert!(!r.html.contains(needle), "the page fetches something: {needle}");
    }
}

#[test]
fn attention_figures_and_table() {
    let r = render(&common::inputs_with_attention(), &ReportOptions::default()).unwrap();
    let ids: Vec<&str> = r.figures.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids[4..],
        ["attention-distance", "attention-entropy", "attention-maps-stages-2-1", "attention-maps-stages-3-1"]
    );
    let md = &r.markdown;
    assert!(md.contains("## Attention by layer"), "{md}");
    // Trained mobilevit_xxs, stages.2.1 layer 1: distances 15..18 over heads -> 16.5 ± 1.29 (sample
    // std); entropy 0.5..1.25 -> 0.875 ± 0.323; uniform on a 4x4 grid 16 px apart; ln 16.
    let uniform = exvit_report::attention::uniform_distance((4, 4), (16.0, 16.0));
    let row = format!(
        "| mobilevit_xxs (trained) | stages.2.1.transformer.1 | 1 | 4x4 | 16.0 | 16.5 ± 1.3 | {uniform:.1} | 0.875 ± 0.323 | 2.773 | 0.250 ± 0.129 | 100 |"
    );
    assert!(md.contains(&row), "{row}\n{md}");
    // Layers in forward order.
    assert!(
        md.find("| mobilevit_xxs (trained) | stages.2.1.transformer.0 |").unwrap()
            < md.find("| mobilevit_xxs (trained) | stages.3.1.transformer.0 |").unwrap()
    );
    // The distance figure: per group a mean line and the heads as points (4 groups -> 8 legend entries).
    let fig = r.figures.iter().find(|f| f.id == "attention-distance").unwrap();
    for entry in ["mobilevit_xxs (trained): each head", "exmobilevit_xxs (random init): mean over heads"] {
        assert!(fig.svg.contains(entry), "{entry}");
    }
    // Maps: the image embedded once per figure as a PNG, referenced by each cell; the only
    // references are to the figure itself or inline data.
    let maps = r.figures.iter().find(|f| f.id == "attention-maps-stages-2-1").unwrap();
    assert_eq!(maps.svg.matches("data:image/png;base64,iVBORw0KGgo").count(), 1);
    assert_eq!(maps.svg.matches("<use ").count(), 1 + 8);
    for (i, _) in r.html.match_indices("href=\"") {
        let rest = &r.html[i + 6..];
        assert!(rest.starts_with('#') || rest.starts_with("data:image/png;base64,"), "{}", &rest[..40]);
    }
    for needle in ["src=", "<link", "<script", "@import", "url("] {
        assert!(!r.html.contains(needle), "the page fetches something: {needle}");
    }
}

#[test]
fn probe_axis_follows_the_forward_pass() {
    let mut taps = [
        "pooled",
        "stages.3",
        "stem",
        "final_conv",
        "stages.2.1.norm",
        "stages.2.1.transformer.1",
        "stages.2",
        "exshortcuts.0",
        "stages.2.1.transformer.0",
        "stages.3.1.transformer.3",
    ];
    taps.sort_by(|a, b| depth_key(a).total_cmp(&depth_key(b)));
    assert_eq!(
        taps,
        [
            "stem",
            "stages.2.1.transformer.0",
            "stages.2.1.transformer.1",
            "stages.2.1.norm",
            "stages.2",
            "stages.3.1.transformer.3",
            "stages.3",
            "final_conv",
            "exshortcuts.0",
            "pooled"
        ]
    );
    // The post-norm tap's old name sorts where the new one does.
    assert_eq!(depth_key("stages.2.1.transformer"), depth_key("stages.2.1.norm"));
}

#[test]
fn writes_html_markdown_and_svg_files_atomically() {
    let dir = std::env::temp_dir().join(format!("exvit-report-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = render(&common::inputs(), &ReportOptions::default()).unwrap();
    let md = write_report(&r, &dir.join("report.html")).unwrap();
    assert_eq!(md, dir.join("report.md"));
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("](report_figures/probe-depth.svg)"));
    for f in &r.figures {
        let svg = std::fs::read_to_string(dir.join(format!("report_figures/{}.svg", f.id))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_inputs_say_so() {
    let r = render(&exvit_report::Inputs::default(), &ReportOptions::default()).unwrap();
    assert!(r.figures.is_empty());
    assert!(r.html.contains("nothing to plot"));
}

/// The table rows of a Markdown report (lines starting with `|`), without the rows that name
/// the run's folder (a path that depends on where the report was made).
fn table_rows(md: &str) -> Vec<String> {
    md.lines().filter(|l| l.starts_with('|') && !l.contains("run-tiny-s0")).map(str::to_string).collect()
}

#[test]
fn renders_a_run_directory_written_by_exvit_0_1_0() {
    // tests/fixtures/rundir-v0: a run, probes and CKA written by the binary of commit 9dc1647,
    // with the report that binary made of them.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rundir-v0");
    let inputs = exvit_report::collect(std::slice::from_ref(&dir)).unwrap();
    assert_eq!((inputs.runs.len(), inputs.probes.len(), inputs.cka.len()), (1, 9, 16));
    let run = &inputs.runs[0];
    assert_eq!((run.model.as_str(), run.seed, run.params), ("tests/fixtures/parity/tiny.toml", 0, Some(85211)));
    let prov = run.provenance.as_ref().unwrap();
    assert_eq!(prov.git_commit.as_deref(), Some("9dc1647a22c7a8b232d7f824d5ef9629e81c5fce"));
    assert_eq!((prov.git_dirty, prov.iteration), (Some(false), Some(6)));
    let r = render(&inputs, &ReportOptions::default()).unwrap();
    let old = std::fs::read_to_string(dir.join("report-v0.md")).unwrap();
    let (now, then) = (table_rows(&r.markdown), table_rows(&old));
    assert!(now.len() >= 10, "{}", r.markdown);
    assert_eq!(now, then, "the tables differ from exvit 0.1.0's report of the same files");
    assert_eq!(r.figures.len(), 4);
}

#[test]
fn legends_sit_below_the_plotted_data() {
    // Every legend entry's text lies under the plot area (the plot is 560 px high), so no entry
    // covers a data point; the SVG grows to hold them.
    let r = render(&common::inputs(), &ReportOptions::default()).unwrap();
    let fig = r.figures.iter().find(|f| f.id == "probe-depth").unwrap();
    let height: f64 = fig.svg.split("height=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    assert!(height > 560.0, "the SVG has no room for a legend: {height}");
    for name in ["mobilevit_xxs (trained)", "mobilevit_xxs (random init)", "exmobilevit_xxs: its own head (val top-1)"]
    {
        let at = fig.svg.find(&format!(">\n{name}\n<")).unwrap_or_else(|| panic!("no legend entry {name}"));
        let tag = &fig.svg[fig.svg[..at].rfind("<text").unwrap()..at];
        let y: f64 = tag.split(" y=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(y > 560.0, "legend entry `{name}` at y = {y}, inside the plot");
    }
}
