//! `exvit demo` end to end at toy scale (tiny models, 6 images per class, one epoch), and
//! `exvit report` over its output. The full-size demo is README's first command; `.ci/run`
//! runs it.

use std::path::PathBuf;
use std::process::Command;

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn demo_trains_probes_and_reports_then_reuses_its_work() {
    let dir = std::env::temp_dir().join(format!("exvit-cli-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = std::fs::read_to_string(repo().join("tests/fixtures/parity/tiny.toml")).unwrap();
    let ex = tiny.replace("name = \"tiny\"", "name = \"tiny_ex\"")
        + "\n[[exshortcuts]]\nstage = 2\nchannels = 8\n\n[[exshortcuts]]\nstage = 3\nchannels = 8\n";
    std::fs::write(dir.join("tiny.toml"), &tiny).unwrap();
    std::fs::write(dir.join("tiny_ex.toml"), ex).unwrap();
    let models = format!("{},{}", dir.join("tiny.toml").display(), dir.join("tiny_ex.toml").display());
    let out = dir.join("demo");
    let args = [
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--models",
        &models,
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--per-class",
        "6",
        "--batch",
        "16",
    ];
    let (ok, stdout, stderr) = exvit(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("report: "), "{stdout}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for id in [
        "probe-depth",
        "cka-0",
        "curves-loss",
        "curves-top1",
        "attention-distance",
        "attention-entropy",
        "attention-maps-stages-2-1",
    ] {
        assert!(html.contains(&format!("data-figure=\"{id}\"")), "figure {id} missing");
    }
    assert!(out.join("report.md").is_file() && out.join("report_figures/probe-depth.svg").is_file());
    let probes = exvit_probe::read_probes(&out.join("probes.parquet")).unwrap();
    // tiny: 15 taps + the early+head concat; tiny_ex: 17 + 1; each trained and at init.
    assert_eq!(probes.len(), 2 * (16 + 18));
    assert!(probes.iter().any(|p| p.weights.is_init() && p.tap == "exshortcuts.1"));
    assert!(probes.iter().all(|p| (0.0..=100.0).contains(&p.top1) && p.n_train == 48 && p.n_eval == 16));
    let cka = exvit_probe::read_cka(&out.join("cka.parquet")).unwrap();
    assert!(cka.iter().any(|r| r.model_a != r.model_b), "base vs ExMobileViT CKA");
    // Attention at twice the size (64): 4 layers of 4 heads, for each model trained and at init.
    let attention = exvit_probe::read_attention(&out.join("attention.parquet")).unwrap();
    assert_eq!(attention.len(), 4 * 16);
    assert!(attention.iter().all(|r| r.size == 64 && r.images == 16));
    let maps = exvit_probe::read_attention_maps(&out).unwrap();
    // 4 images shared by the 4 weight sets, each: 3 blocks x 4 heads x 2 queries.
    assert_eq!((maps.images.len(), maps.maps.len()), (4, 4 * 4 * 24));

    // Again: the trained runs are reused, the tables rewritten (not appended twice).
    let (ok, _, stderr) = exvit(&args);
    assert!(ok && stderr.contains("already trained, reused"), "{stderr}");
    assert_eq!(exvit_probe::read_probes(&out.join("probes.parquet")).unwrap().len(), probes.len());
    assert_eq!(exvit_probe::read_attention(&out.join("attention.parquet")).unwrap().len(), attention.len());
    assert_eq!(exvit_probe::read_attention_maps(&out).unwrap(), maps);

    // The same study with two seeds trained in two child processes at once: seed 0 gives the
    // run trained in-process above (up to the order of float sums: one compute thread there
    // against two here); every run writes per-image predictions that agree with its metrics;
    // the report holds the paired comparison; the probes use the per-class subset.
    let out3 = dir.join("demo-jobs");
    let mut args3: Vec<&str> = args.to_vec();
    args3[2] = out3.to_str().unwrap();
    args3[8] = "2";
    args3.extend(["--jobs", "2", "--probe-train-per-class", "3"]);
    let (ok, stdout, stderr) = exvit(&args3);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("trained ").count(), 4, "{stdout}");
    for tag in ["tiny-s0", "tiny-s1", "tiny_ex-s0", "tiny_ex-s1"] {
        let run = out3.join("runs").join(tag);
        assert!(out3.join("runs").join(format!("{tag}.log")).is_file());
        let metrics = exvit_rundir::read_metrics(&run.join("metrics.parquet")).unwrap();
        let eval = metrics.iter().rev().find(|r| r.kind == exvit_rundir::MetricKind::Eval).unwrap();
        let p = exvit_rundir::read_predictions(&run.join("predictions.parquet")).unwrap();
        assert_eq!(p.labels.len(), 16);
        let top1 = 100.0 * p.ranks.iter().filter(|&&r| r == 0).count() as f64 / 16.0;
        let top5 = 100.0 * p.ranks.iter().filter(|&&r| r < 5).count() as f64 / 16.0;
        assert_eq!((top1, top5), (eval.top1, eval.top5), "{tag}");
        let ema = p.ema_ranks.as_ref().unwrap();
        assert_eq!(100.0 * ema.iter().filter(|&&r| r == 0).count() as f64 / 16.0, eval.ema_top1, "{tag}");
    }
    let losses = |d: &std::path::Path| -> Vec<f64> {
        exvit_rundir::read_metrics(&d.join("runs/tiny-s0/metrics.parquet"))
            .unwrap()
            .iter()
            .filter(|r| r.kind == exvit_rundir::MetricKind::Train)
            .map(|r| r.loss)
            .collect()
    };
    let (l1, l3) = (losses(&out), losses(&out3));
    assert_eq!(l1.len(), l3.len());
    for (a, b) in l1.iter().zip(&l3) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "in-process {l1:?} vs child {l3:?}");
    }
    let probes = exvit_probe::read_probes(&out3.join("probes.parquet")).unwrap();
    assert!(probes.iter().all(|p| p.n_train == 24 && p.n_eval == 16), "{:?}", probes[0]);
    let md = std::fs::read_to_string(out3.join("report.md")).unwrap();
    assert!(md.contains("## Paired comparisons"), "{md}");
    assert!(md.lines().any(|l| l.contains("tiny_ex.toml − ") && l.contains(" | 2 | ")), "{md}");

    // `exvit report` over the same folder.
    let other = dir.join("r/other.html");
    let (ok, stdout, stderr) = exvit(&["report", out.to_str().unwrap(), "--out", other.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    // Figures: the probe curve, CKA within each model and between them (3), two training
    // curves, attention distance and entropy, the maps of 3 blocks.
    assert!(stdout.contains("(2 runs, 68 probes") && stdout.contains("11 figures"), "{stdout}");
    assert!(dir.join("r/other.md").is_file() && dir.join("r/other_figures/curves-top1.svg").is_file());
    let (ok, _, stderr) = exvit(&["report", dir.join("missing").to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a folder"), "{stderr}");

    // `--data ROOT`: a real ImageFolder with train/ and test/ (no val/), nothing generated.
    let real = dir.join("real");
    let spec = exvit_data::synthetic::DemoSpec { size: 28, train_per_class: 4, val_per_class: 2, seed: 9 };
    exvit_data::synthetic::write_demo_dataset(&real, spec).unwrap();
    std::fs::rename(real.join("val"), real.join("test")).unwrap();
    let out2 = dir.join("demo2");
    let (ok, stdout, stderr) = exvit(&[
        "demo",
        "--data",
        real.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--models",
        dir.join("tiny.toml").to_str().unwrap(),
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--batch",
        "8",
        "--size",
        "28",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("report: "), "{stdout}");
    assert!(!out2.join("data").exists(), "no dataset is generated with --data");
    let probes = exvit_probe::read_probes(&out2.join("probes.parquet")).unwrap();
    assert!(probes.iter().all(|p| p.n_train == 32 && p.n_eval == 16), "{:?}", probes[0]);
    let (ok, _, stderr) =
        exvit(&["demo", "--data", dir.join("tiny.toml").to_str().unwrap(), "--out", out2.to_str().unwrap()]);
    assert!(!ok && stderr.contains("no val/ or test/ split"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
