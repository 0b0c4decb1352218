//! The run-directory formats: files an older exvit wrote read back, every type round-trips,
//! readers are lenient where formats grew and name the file and column where they cannot read.

use std::path::{Path, PathBuf};

use exvit_rundir::*;

fn v0() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rundir-v0")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-rundir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn reads_what_exvit_0_1_0_wrote() {
    let run = RunDir::new(v0().join("run-tiny-s0"));
    assert!(RunDir::is_run(run.path()));
    let h = RunHeader::read(&run.config()).unwrap();
    assert_eq!((h.model.as_str(), h.seed, h.epochs), ("tests/fixtures/parity/tiny.toml", 0, Some(2)));
    assert!(h.text.contains("[recipe.adamw]"));
    let m = read_metrics(&run.metrics()).unwrap();
    // 2 epochs of 3 steps, an evaluation after each.
    assert_eq!(m.iter().filter(|r| r.kind == MetricKind::Train).count(), 6);
    let evals: Vec<&MetricRow> = m.iter().filter(|r| r.kind == MetricKind::Eval).collect();
    assert_eq!(evals.iter().map(|r| (r.epoch, r.iteration)).collect::<Vec<_>>(), [(0, 3), (1, 6)]);
    assert!((evals[1].top1 - 58.333).abs() < 1e-2, "{}", evals[1].top1);
    let p = read_predictions(&run.predictions()).unwrap();
    assert_eq!((p.epoch, p.labels.len(), p.ema_ranks.as_ref().map(Vec::len)), (1, 12, Some(12)));
    // The top-1 is the share of rank-0 labels.
    let right = p.ranks.iter().filter(|&&r| r == 0).count();
    assert_eq!(right, 7);
    let prov = read_provenance(&run.provenance()).unwrap();
    assert_eq!((prov.replicas, prov.threads, prov.epoch), (Some(1), Some(2), Some(2)));
    assert_eq!(count_params_in_file(&run.model()).unwrap(), 85211);
    let probes = read_probes(&v0().join("probes.parquet")).unwrap();
    assert_eq!(probes.len(), 9);
    assert_eq!(probes.iter().filter(|p| p.weights.is_init()).count(), 4);
    assert_eq!(probes.iter().filter(|p| p.is_combination()).count(), 1);
    let cka = read_cka(&v0().join("cka.parquet")).unwrap();
    assert_eq!(cka.len(), 16);
    assert!(cka.iter().filter(|r| r.tap_a == r.tap_b).all(|r| (r.cka - 1.0).abs() < 1e-6));
}

#[test]
fn every_format_round_trips() {
    let d = RunDir::new(tmp("roundtrip"));
    let rows = vec![
        MetricRow {
            kind: MetricKind::Train,
            epoch: 0,
            iteration: 1,
            lr: 2e-4,
            loss: 2.3,
            img_per_s: 50.0,
            resolution: 32,
            batch: 8,
            ..Default::default()
        },
        MetricRow {
            kind: MetricKind::Eval,
            epoch: 0,
            iteration: 1,
            loss: 2.1,
            top1: 40.0,
            top5: 90.0,
            ema_top1: f64::NAN,
            ema_top5: f64::NAN,
            ..Default::default()
        },
    ];
    write_metrics(&rows, &d.metrics()).unwrap();
    let back = read_metrics(&d.metrics()).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0], rows[0]);
    assert!(back[1].ema_top1.is_nan() && back[1].top1 == 40.0 && back[1].kind == MetricKind::Eval);
    let p = Predictions { epoch: 3, labels: vec![0, 1, 2], ranks: vec![0, 2, u32::MAX], ema_ranks: None };
    write_predictions(&p, &d.predictions()).unwrap();
    assert_eq!(read_predictions(&d.predictions()).unwrap(), p);
    let prov =
        Provenance { git_commit: Some("abc".into()), git_dirty: Some(true), seed: Some(4), ..Default::default() };
    write_provenance(&prov, &d.provenance()).unwrap();
    assert_eq!(read_provenance(&d.provenance()).unwrap(), prov);
    let probe = ProbeRow {
        model: "m".into(),
        weights: WeightsRef::Init { seed: 2 },
        tap: "stem".into(),
        pooling: "gap".into(),
        dim: 8,
        wd: 1e-4,
        top1: 50.0,
        top5: 100.0,
        n_train: 10,
        n_eval: 5,
        seed: 0,
        seconds: 0.1,
    };
    let table = d.path().join("probes.parquet");
    write_probes(&table, std::slice::from_ref(&probe)).unwrap();
    write_probes(&table, &[ProbeRow { weights: WeightsRef::File("w.safetensors".into()), ..probe.clone() }]).unwrap();
    let got = read_probes(&table).unwrap();
    assert_eq!(got.len(), 2, "the second write appends");
    assert_eq!(got[0], probe);
    assert_eq!(got[1].weights, WeightsRef::File("w.safetensors".into()));
    let leftovers = std::fs::read_dir(d.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"));
    assert_eq!(leftovers.count(), 0);
    std::fs::remove_dir_all(d.path()).unwrap();
}

#[test]
fn readers_are_lenient_where_formats_grew() {
    let d = tmp("lenient");
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, "model = \"mobilevit_s\"\nseed = 3\nsome_future_option = true\n[recipe]\nnew = 1\n").unwrap();
    let h = RunHeader::read(&cfg).unwrap();
    assert_eq!((h.model.as_str(), h.seed, h.epochs), ("mobilevit_s", 3, None));
    let prov = d.join("provenance.json");
    std::fs::write(&prov, "{\"seed\": 1, \"a_later_field\": [1, 2]}").unwrap();
    let p = read_provenance(&prov).unwrap();
    assert_eq!((p.seed, p.git_commit), (Some(1), None));
    std::fs::remove_dir_all(&d).unwrap();
}

fn err(r: Result<impl std::fmt::Debug, RunDirError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_input_names_the_file_and_the_field() {
    let d = tmp("bad");
    let cfg = d.join("config.toml");
    std::fs::write(&cfg, "seed = 3\n").unwrap();
    let e = err(RunHeader::read(&cfg));
    assert!(e.contains("config.toml") && e.contains("model"), "{e}");
    // A metrics table without the `top1` column (a predictions file where a metrics file is).
    let p = Predictions { epoch: 0, labels: vec![1], ranks: vec![0], ema_ranks: None };
    let wrong = d.join("metrics.parquet");
    write_predictions(&p, &wrong).unwrap();
    let e = err(read_metrics(&wrong));
    assert!(e.contains("metrics.parquet") && e.contains("column"), "{e}");
    std::fs::write(&wrong, b"not parquet").unwrap();
    assert!(err(read_metrics(&wrong)).contains("metrics.parquet"));
    let e = err(read_metrics(Path::new("/nonexistent/metrics.parquet")));
    assert!(e.contains("/nonexistent/metrics.parquet"), "{e}");
    let w = d.join("w.safetensors");
    std::fs::write(&w, [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    assert!(err(count_params_in_file(&w)).contains("w.safetensors"));
    std::fs::remove_dir_all(&d).unwrap();
}
