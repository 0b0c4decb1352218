//! `exvit train` and `exvit eval` end to end on a tiny model and a generated dataset:
//! a run killed with SIGKILL and resumed ends with the same metrics as an uninterrupted run,
//! the shipped configs parse, and a bad config is refused before any work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exvit_rundir::read_metrics;
use exvit_tests::tensor_bytes;
use exvit_train::run::RunConfig;

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).env("RAYON_NUM_THREADS", "2").output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 3 classes × 8 tinted-noise PNGs.
fn dataset(root: &Path) {
    for c in 0..3usize {
        for i in 0..8u32 {
            let img = image::RgbImage::from_fn(36, 36, |x, y| {
                let mut p = [((x * 31 + y * 17 + i * 7) % 64) as u8; 3];
                p[c] = p[c].saturating_add(150);
                image::Rgb(p)
            });
            let dir = root.join(format!("c{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn config(dir: &Path, out: &Path) -> PathBuf {
    exvit_tests::tiny_run_config(dir, out, 3, 2)
}

/// Compares the numbers a resume must reproduce (timings aside).
fn comparable(run: &Path) -> Vec<(String, u64, u64, String)> {
    read_metrics(&run.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.kind.as_str().to_string(),
                r.epoch,
                r.iteration,
                format!("{:?} {:?} {:?} {:?} {:?} {:?}", r.lr, r.loss, r.top1, r.top5, r.ema_top1, r.batch),
            )
        })
        .collect()
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_metrics() {
    let dir = tmp("kill");
    dataset(&dir.join("data"));
    // Uninterrupted.
    let (a_out, b_out) = (dir.join("a"), dir.join("b"));
    let (ok, stdout, stderr) = exvit(&["train", "--config", config(&dir, &a_out).to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("done: 3 epochs"), "{stdout}");
    // Killed for real once a checkpoint exists, then resumed.
    let cfg_b = config(&dir, &b_out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_exvit"))
        .args(["train", "--config", cfg_b.to_str().unwrap()])
        .env("RAYON_NUM_THREADS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !b_out.join("ckpt-00000004.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (ok, stdout, stderr) = exvit(&["train", "--resume", b_out.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let (a, b) = (comparable(&a_out), comparable(&b_out));
    assert!(a.iter().any(|r| r.0 == "eval") && a.len() > 12, "{a:?}");
    assert_eq!(a, b, "the resumed run's metrics differ from the uninterrupted run's");
    for f in ["config.toml", "provenance.json", "model.safetensors", "ema.safetensors", "best.safetensors"] {
        assert!(b_out.join(f).exists(), "{f} missing");
    }
    // Provenance names the commit the binary was built from (baked in by exvit-train's build
    // script): the checkout's HEAD here, since cargo rebuilt it for this test.
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b_out.join("provenance.json")).unwrap()).unwrap();
    let head = Command::new("git").args(["-C", repo().to_str().unwrap(), "rev-parse", "HEAD"]).output().ok();
    if let Some(head) = head.filter(|o| o.status.success()) {
        assert_eq!(prov["git_commit"].as_str(), Some(String::from_utf8_lossy(&head.stdout).trim()), "{prov}");
        assert!(prov["git_dirty"].is_boolean(), "{prov}");
    }
    let ckpts = std::fs::read_dir(&b_out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("ckpt-"))
        .count();
    assert_eq!(ckpts, 2, "keep_last = 2");
    // `exvit eval` on the weights the run wrote gives the run's last evaluation.
    let (ok, stdout, stderr) = exvit(&[
        "eval",
        "--model",
        repo().join("tests/fixtures/parity/tiny.toml").to_str().unwrap(),
        "--weights",
        b_out.join("model.safetensors").to_str().unwrap(),
        "--data",
        dir.join("data").to_str().unwrap(),
        "--resolution",
        "24",
        "--crop-pct",
        "1.0",
        "--interpolation",
        "bilinear",
    ]);
    assert!(ok, "{stdout}{stderr}");
    let last = read_metrics(&b_out.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .rfind(|r| r.kind == exvit_rundir::MetricKind::Eval)
        .unwrap();
    assert!(
        stdout.contains(&format!("top-1 {:.2}%", last.top1)),
        "eval printed {stdout}, the run's last eval had top-1 {:.2}%",
        last.top1
    );
}

/// Data parallel on threads (`--replicas 2`, batch 2 each): killed with SIGKILL after a
/// checkpoint and resumed with the same replicas, the run ends with the uninterrupted run's
/// metrics and weights, bit for bit; the guards compared the replicas after every step.
#[test]
fn replicas_killed_with_sigkill_resume_to_the_same_run() {
    let dir = tmp("replicas-kill");
    dataset(&dir.join("data"));
    let (a_out, b_out) = (dir.join("a"), dir.join("b"));
    let replicas = ["--replicas", "2", "--batch", "2", "--guard-every", "1"];
    let cfg_a = config(&dir, &a_out);
    let (ok, stdout, stderr) = exvit(&[&["train", "--config", cfg_a.to_str().unwrap()][..], &replicas].concat());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("done: 3 epochs, 18 iterations"), "{stdout}");
    let cfg_b = config(&dir, &b_out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_exvit"))
        .args(["train", "--config", cfg_b.to_str().unwrap()])
        .args(replicas)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !b_out.join("ckpt-00000008.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (ok, stdout, stderr) =
        exvit(&[&["train", "--resume", b_out.to_str().unwrap()][..], &replicas[..2], &replicas[4..]].concat());
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(comparable(&a_out), comparable(&b_out), "the resumed run's metrics differ");
    for f in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (tensor_bytes(&a_out.join(f)), tensor_bytes(&b_out.join(f)));
        assert!(a == b, "{f}: the resumed run's tensors differ");
    }
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b_out.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["replicas"], 2, "{prov}");
}

#[test]
fn shipped_configs_parse() {
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let p = entry.unwrap().path();
        let cfg = RunConfig::from_toml_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(cfg.epochs > 0 && cfg.batch > 0, "{}", p.display());
    }
}

#[test]
fn a_bad_config_is_refused_before_any_work() {
    let dir = tmp("bad");
    dataset(&dir.join("data"));
    let good = std::fs::read_to_string(config(&dir, &dir.join("run"))).unwrap();
    let cases = [
        (good.replace("batch = 4", "batch = 4\nbatchsize = 8"), "unknown field `batchsize`"),
        (good.replace("epochs = 3", "epochs = \"three\""), "epochs"),
        (good.replace(&dir.join("data").display().to_string(), "/no/such/dataset"), "/no/such/dataset"),
        (
            good.replace(&format!("out = \"{}\"", dir.join("run").display()), "out = \"/proc/exvit-cannot-write\""),
            "/proc/exvit-cannot-write",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (ok, stdout, stderr) = exvit(&["train", "--config", p.to_str().unwrap()]);
        assert!(!ok, "case {i} should fail: {stdout}");
        assert!(stderr.contains(want), "case {i}: the error should name {want:?}: {stderr}");
        assert!(!dir.join("run").join("metrics.parquet").exists(), "case {i}: work started");
    }
}

#[test]
fn ctrl_c_checkpoints_and_exits_cleanly() {
    let dir = tmp("sigint");
    dataset(&dir.join("data"));
    let out = dir.join("run");
    // Long enough not to finish on its own before the signal arrives.
    let text = std::fs::read_to_string(config(&dir, &out))
        .unwrap()
        .replace("epochs = 3", "epochs = 200")
        .replace("max_epochs = 3", "max_epochs = 200");
    let cfg = dir.join("long.toml");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_exvit"))
        .args(["train", "--config", cfg.to_str().unwrap()])
        .env("RAYON_NUM_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !out.join("ckpt-00000002.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let result = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("stopped at epoch"), "{stdout}");
    // The checkpoint of the step it stopped after is there, and the run resumes from it.
    let rows = read_metrics(&out.join("metrics.parquet")).unwrap();
    let last = rows.iter().map(|r| r.iteration).max().unwrap();
    assert!(out.join(format!("ckpt-{last:08}.safetensors")).exists(), "no checkpoint at the last iteration {last}");
    let (ok, _, stderr) =
        exvit(&["train", "--resume", out.to_str().unwrap(), "--max-iterations", &(last + 1).to_string()]);
    assert!(ok && stderr.contains(&format!("iteration={last}")), "{stderr}");
}
