//! `exvit probe taps | extract | fit | cka | attention` end to end on a generated dataset.

use std::path::{Path, PathBuf};
use std::process::Command;

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `root/{train,val}/c{0,1,2}/*.png`: noise tinted red, green or blue (told apart by colour).
fn dataset(root: &Path, per_class: u32) {
    for (split, offset) in [("train", 0), ("val", 1000)] {
        for c in 0..3usize {
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(40, 36, |x, y| {
                    let noise = ((x * 31 + y * 17 + (i + offset) * 7) % 96) as u8;
                    let mut p = [noise; 3];
                    p[c] = p[c].saturating_add(120);
                    image::Rgb(p)
                });
                let p = root.join(format!("{split}/c{c}/{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                img.save(&p).unwrap();
            }
        }
    }
}

#[test]
fn taps_extract_fit_and_cka_end_to_end() {
    let dir = std::env::temp_dir().join(format!("exvit-cli-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dataset(&dir.join("data"), 8);
    let tiny = repo().join("tests/fixtures/parity/tiny.toml");
    let tiny = tiny.to_str().unwrap();
    let (ok, out, err) = exvit(&["probe", "taps", "--model", tiny, "--resolution", "32", "--json"]);
    assert!(ok, "{err}");
    let taps: serde_json::Value = serde_json::from_str(&out).unwrap();
    // stem, stages.0-4, final_conv, pooled, and in the 3 MobileViT blocks (1, 2 and 1
    // transformer layers) each layer and the post-norm tokens.
    assert_eq!(taps.as_array().unwrap().len(), 15, "{out}");
    let names: Vec<&str> = taps.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names[6..11],
        [
            "stages.3.1.transformer.0",
            "stages.3.1.transformer.1",
            "stages.3.1.norm",
            "stages.3",
            "stages.4.1.transformer.0"
        ]
    );
    assert_eq!(taps[0]["name"], "stem");
    assert_eq!(taps[0]["stride"], 2);

    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let data = d("data");
    for split in ["train", "val"] {
        let out_dir = d(split);
        let args = [
            "probe",
            "extract",
            "--model",
            tiny,
            "--seed",
            "3",
            "--data",
            &data,
            "--split",
            split,
            "--taps",
            "stem,stages.2:avgmax,stages.3.1.transformer,final_conv,pooled",
            "--resolution",
            "32",
            "--batch",
            "4",
            "--shard-rows",
            "8",
            "--out",
            &out_dir,
        ];
        let (ok, out, err) = exvit(&args);
        assert!(ok, "{err}");
        assert!(out.contains("3 shards written, 0 kept, 24 images"), "{out}");
        // Again: everything is there already.
        let (ok, out, err) = exvit(&args);
        assert!(ok && out.contains("0 shards written, 3 kept"), "{out}{err}");
    }
    let probes = d("probes.parquet");
    let (ok, out, err) = exvit(&[
        "probe",
        "fit",
        "--train",
        &d("train"),
        "--eval",
        &d("val"),
        "--combine",
        "stem+final_conv",
        "--wd",
        "1e-3,1e-2",
        "--out",
        &probes,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("stages.2:avgmax") && out.contains("stem:gap+final_conv:gap"), "{out}");
    let rows = exvit_probe::read_probes(Path::new(&probes)).unwrap();
    assert_eq!(rows.len(), 6);
    let stem = rows.iter().find(|r| r.tap == "stem").unwrap();
    assert_eq!((stem.pooling.as_str(), stem.dim, stem.n_train, stem.n_eval), ("gap", 8, 24, 24));
    assert_eq!(stem.weights, exvit_probe::WeightsRef::Init { seed: 3 });
    // Colour is linearly decodable from the stem's average: the probe must find it.
    assert!(stem.top1 > 90.0, "stem probe top-1 {}", stem.top1);
    assert!([1e-3, 1e-2].contains(&stem.wd));
    let avgmax = rows.iter().find(|r| r.tap == "stages.2").unwrap();
    assert_eq!((avgmax.pooling.as_str(), avgmax.dim), ("avgmax", 32));
    let combo = rows.iter().find(|r| r.tap == "stem+final_conv").unwrap();
    assert_eq!((combo.pooling.as_str(), combo.dim), ("gap+gap", 8 + 64));

    let cka = d("cka.parquet");
    let (ok, out, err) = exvit(&["probe", "cka", "--cache", &d("val"), "--out", &cka]);
    assert!(ok, "{err}");
    assert!(out.contains("24 images"), "{out}");
    let rows = exvit_probe::read_cka(Path::new(&cka)).unwrap();
    assert_eq!(rows.len(), 25);
    for r in &rows {
        assert!((0.0..=1.0 + 1e-6).contains(&r.cka), "{r:?}");
        if r.tap_a == r.tap_b {
            assert!((r.cka - 1.0).abs() < 1e-5, "{r:?}");
        }
    }
    let sym = |a: &str, b: &str| rows.iter().find(|r| r.tap_a == a && r.tap_b == b).unwrap().cka;
    assert_eq!(sym("stem:gap", "final_conv:gap"), sym("final_conv:gap", "stem:gap"));
    // final_conv's average is exactly `pooled` for a model without ExShortcuts.
    assert!((sym("final_conv:gap", "pooled:none") - 1.0).abs() < 1e-5);

    // Train and val caches of different models are refused.
    let (ok, _, err) = exvit(&[
        "probe",
        "extract",
        "--model",
        tiny,
        "--seed",
        "4",
        "--data",
        &data,
        "--split",
        "val",
        "--taps",
        "stem",
        "--resolution",
        "32",
        "--out",
        &d("val4"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = exvit(&["probe", "fit", "--train", &d("train"), "--eval", &d("val4"), "--out", &probes]);
    assert!(!ok && err.contains("different models or weights"), "{err}");
    // An incomplete cache is named, with what to do.
    std::fs::remove_file(dir.join("val/shard-00001.arrow")).unwrap();
    let (ok, _, err) = exvit(&["probe", "cka", "--cache", &d("val"), "--out", &cka]);
    assert!(!ok && err.contains("1 of 3 shards missing") && err.contains("exvit probe extract"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attention_statistics_maps_and_their_report() {
    let dir = std::env::temp_dir().join(format!("exvit-cli-attention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dataset(&dir.join("data"), 4);
    let tiny = repo().join("tests/fixtures/parity/tiny.toml");
    let tiny = tiny.to_str().unwrap();
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let (data, table) = (d("data"), d("out/attention.parquet"));
    let run = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "probe",
            "attention",
            "--model",
            tiny,
            "--seed",
            seed,
            "--data",
            &data,
            "--resolution",
            "64",
            "--batch",
            "5",
            "--out",
            &table,
        ];
        args.extend_from_slice(extra);
        exvit(&args)
    };
    let (ok, out, err) = run("3", &["--maps", "2"]);
    assert!(ok, "{err}");
    // 4 layers (1 + 2 + 1) of 4 heads over the 12 validation images.
    assert!(out.contains("16 rows (layer x head) over 12 images") && out.contains("48 maps of 2 images"), "{out}");
    let rows = exvit_probe::read_attention(Path::new(&table)).unwrap();
    assert_eq!(rows.len(), 16);
    let layer = |tap: &str| rows.iter().filter(|r| r.tap() == tap).collect::<Vec<_>>();
    // stages.2 at 64 px: an 8x8 map at stride 8, 2x2 patches -> a 4x4 grid, 16 px per step.
    let s2 = layer("stages.2.1.transformer.0");
    assert_eq!((s2[0].grid_h, s2[0].grid_w, s2[0].step_h, s2[0].size, s2[0].images), (4, 4, 16.0, 64, 12));
    for r in &s2 {
        // Between none (0) and the farthest patch, entropy between 0 and ln 16.
        assert!(r.distance > 0.0 && r.distance < 16.0 * 18f64.sqrt(), "{r:?}");
        assert!(r.entropy > 0.0 && r.entropy <= 16f64.ln() + 1e-9, "{r:?}");
        assert!(r.self_attention > 0.0 && r.self_attention < 1.0, "{r:?}");
        assert_eq!(r.weights, exvit_probe::WeightsRef::Init { seed: 3 });
    }
    // stages.4 at 64 px: a 2x2 map, one patch: each token attends to itself only.
    for r in layer("stages.4.1.transformer.0") {
        assert_eq!((r.grid_h, r.grid_w), (1, 1));
        assert!(r.distance == 0.0 && r.entropy.abs() < 1e-6 && (r.self_attention - 1.0).abs() < 1e-6, "{r:?}");
    }
    let maps = exvit_probe::read_attention_maps(&dir.join("out")).unwrap();
    assert_eq!((maps.images.len(), maps.maps.len()), (2, 48));
    // The first image of two different classes, as the model saw it (64x64 RGB).
    assert_ne!(maps.images[0].label, maps.images[1].label);
    assert_eq!((maps.images[0].width, maps.images[0].rgb.len()), (64, 64 * 64 * 3));
    for m in &maps.maps {
        let sum: f32 = m.values.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{} {} head {}: sums to {sum}", m.block, m.query, m.head);
    }
    // A second model's rows append; --limit balances the classes; the maps' images are shared.
    let (ok, out, err) = run("4", &["--limit", "6", "--blocks", "stages.3.1", "--maps", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("8 rows (layer x head) over 6 images"), "{out}");
    assert_eq!(exvit_probe::read_attention(Path::new(&table)).unwrap().len(), 24);
    assert_eq!(exvit_probe::read_attention_maps(&dir.join("out")).unwrap().images.len(), 2);
    // An unknown block is named with the model's blocks.
    let (ok, _, err) = run("4", &["--blocks", "stages.9.1"]);
    assert!(!ok && err.contains("stages.9.1") && err.contains("stages.2.1, stages.3.1, stages.4.1"), "{err}");

    // The report picks the tables up: two figures against depth, one map figure per block, the table.
    let html = d("report.html");
    let (ok, out, err) = exvit(&["report", &d("out"), "--out", &html]);
    assert!(ok, "{err}");
    assert!(out.contains("5 figures"), "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in [
        "fig-attention-distance",
        "fig-attention-entropy",
        "fig-attention-maps-stages-2-1",
        "fig-attention-maps-stages-4-1",
        "Attention by layer",
        "stages.3.1.transformer.1",
        "data:image/png;base64,",
    ] {
        assert!(page.contains(needle), "the report lacks {needle}");
    }
    // Self-contained: every reference is to the page itself or inline data.
    for (i, _) in page.match_indices("href=\"") {
        let rest = &page[i + 6..];
        assert!(rest.starts_with("#") || rest.starts_with("data:image/png"), "{}", &rest[..40.min(rest.len())]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
