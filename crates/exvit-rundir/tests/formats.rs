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

fn attention_row(head: u32, distance: f64) -> AttentionRow {
    AttentionRow {
        model: "mobilevit_xxs".into(),
        weights: WeightsRef::Init { seed: 3 },
        block: "stages.2.1".into(),
        layer: 1,
        head,
        size: 64,
        grid_h: 4,
        grid_w: 4,
        step_h: 16.0,
        step_w: 16.0,
        distance,
        entropy: 1.25,
        self_attention: 0.125,
        images: 10,
    }
}

fn attention_maps() -> AttentionMaps {
    AttentionMaps {
        images: vec![MapImage {
            image: 0,
            label: "cat".into(),
            source: "val/cat/1.png".into(),
            width: 2,
            height: 1,
            rgb: vec![0, 1, 2, 250, 251, 252],
        }],
        maps: ["centre", "mean"]
            .iter()
            .map(|q| AttentionMap {
                model: "m".into(),
                weights: WeightsRef::File("w.safetensors".into()),
                image: 0,
                block: "stages.3.1".into(),
                layer: 0,
                head: 2,
                query: q.to_string(),
                grid_h: 1,
                grid_w: 3,
                values: vec![0.25, 0.5, 0.25],
            })
            .collect(),
    }
}

#[test]
fn attention_tables_round_trip_and_append() {
    let d = tmp("attention");
    let p = d.join("attention.parquet");
    write_attention(&p, &[attention_row(0, 12.5)]).unwrap();
    write_attention(&p, &[attention_row(1, 20.0), attention_row(2, 0.0)]).unwrap();
    let rows = read_attention(&p).unwrap();
    assert_eq!(rows, [attention_row(0, 12.5), attention_row(1, 20.0), attention_row(2, 0.0)]);
    assert_eq!(rows[0].tap(), "stages.2.1.transformer.1");
    let maps = attention_maps();
    write_attention_maps(&d, &maps).unwrap();
    assert_eq!(read_attention_maps(&d).unwrap(), maps);
    // A second model's maps of the same image and of a new one: the image is stored once.
    let mut more = attention_maps();
    more.images[0].image = 5;
    more.images.push(MapImage { image: 9, source: "val/dog/2.png".into(), ..more.images[0].clone() });
    more.maps[0] = AttentionMap { model: "other".into(), image: 5, ..more.maps[0].clone() };
    more.maps[1] = AttentionMap { model: "other".into(), image: 9, ..more.maps[1].clone() };
    write_attention_maps(&d, &more).unwrap();
    let all = read_attention_maps(&d).unwrap();
    assert_eq!(
        all.images.iter().map(|i| (i.image, i.source.as_str())).collect::<Vec<_>>(),
        [(0, "val/cat/1.png"), (1, "val/dog/2.png")]
    );
    assert_eq!(
        all.maps.iter().map(|m| (m.model.as_str(), m.image)).collect::<Vec<_>>(),
        [("m", 0), ("m", 0), ("other", 0), ("other", 1)]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn attention_maps_that_disagree_with_their_grids_or_images_are_refused() {
    // A grid that does not match its values.
    let d = tmp("attention-bad");
    let mut maps = attention_maps();
    maps.maps[1].grid_w = 4;
    write_attention_maps(&d, &maps).unwrap();
    let e = err(read_attention_maps(&d));
    assert!(e.contains("attention_maps.parquet") && e.contains("12 bytes of values for a 1x4 grid"), "{e}");
    // A map whose image is missing: refused when written, and when read (folders mixed by hand).
    let e = err(write_attention_maps(&tmp("attention-bad-w"), &AttentionMaps { images: vec![], ..attention_maps() }));
    assert!(e.contains("refers to image 0"), "{e}");
    let other = tmp("attention-bad-other");
    let mut two = attention_maps();
    two.images.push(MapImage { image: 1, source: "val/dog/2.png".into(), ..two.images[0].clone() });
    two.maps[0].image = 1;
    write_attention_maps(&other, &two).unwrap();
    let good = tmp("attention-bad-good");
    write_attention_maps(&good, &attention_maps()).unwrap();
    std::fs::copy(AttentionMaps::maps_path(&other), AttentionMaps::maps_path(&good)).unwrap();
    let e = err(read_attention_maps(&good));
    assert!(e.contains("image 1 is not in") && e.contains("attention_images.parquet"), "{e}");
    // An image whose bytes do not match its size.
    let d = tmp("attention-bad-rgb");
    let mut maps = attention_maps();
    maps.images[0].height = 2;
    write_attention_maps(&d, &maps).unwrap();
    let e = err(read_attention_maps(&d));
    assert!(e.contains("attention_images.parquet") && e.contains("6 bytes of RGB for 2x2 pixels"), "{e}");
    // One of the two files gone.
    std::fs::remove_file(AttentionMaps::images_path(&good)).unwrap();
    let e = err(read_attention_maps(&good));
    assert!(e.contains("attention_images.parquet"), "{e}");
    for f in ["attention-bad", "attention-bad-w", "attention-bad-other", "attention-bad-good", "attention-bad-rgb"] {
        let _ = std::fs::remove_dir_all(tmp(f));
    }
}
