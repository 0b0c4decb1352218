//! A file system that fills up (docs/reliability.md): `exvit train`, `exvit probe extract`,
//! `exvit data check --manifest-dir` and `exvit report` writing to a small tmpfs that this test
//! mounts, filled so that a write fails partway. Each must stop with a clear error naming the
//! file, keep what it had finished (the previous checkpoint, the finished cache shards), leave
//! no temporary file, and, once space is freed, `--resume` / a rerun ends as an uninterrupted run.
//!
//! Mounting needs root (or CAP_SYS_ADMIN). Elsewhere the tests print `SKIPPED` with the reason
//! and pass, unless `EXVIT_REQUIRE_MOUNT=1`, when they fail (`.ci/run` sets it: CI runs as root).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use exvit_rundir::read_metrics;
use exvit_tests::{tensor_bytes, tiny_run_config};

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).env("RAYON_NUM_THREADS", "2").output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-full-{tag}-{}", std::process::id()));
    let _ = Command::new("umount").arg(d.join("disk")).output();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tmpfs mounted at a folder for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `dir`, or says why it cannot (then the test skips, unless
    /// `EXVIT_REQUIRE_MOUNT=1`).
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs", &s(dir)])
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("no mount command: {e}"),
        };
        let why = format!("cannot mount a tmpfs at {} ({why}); the full-disk tests need root", dir.display());
        if std::env::var("EXVIT_REQUIRE_MOUNT").as_deref() == Ok("1") {
            panic!("{why} (EXVIT_REQUIRE_MOUNT=1)");
        }
        eprintln!("SKIPPED: {why}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// Fills the file system of `dir` with `dir/filler` until `leave` bytes are free; returns the
/// filler's path (delete it to free the space).
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let p = dir.join("filler");
    let mut f = File::create(&p).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("{e}"),
        }
    }
    f.set_len(written.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
    p
}

/// Files whose names mark an unfinished atomic write (`.NAME.tmp-PID`), under `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") {
            out.push(s(&e));
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn size_of(paths: impl IntoIterator<Item = PathBuf>) -> u64 {
    paths.into_iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn metrics(run: &Path) -> Vec<String> {
    read_metrics(&run.join("metrics.parquet"))
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {} {} {:?} {:?} {:?}", r.kind.as_str(), r.epoch, r.iteration, r.lr, r.loss, r.top1))
        .collect()
}

const NO_SPACE: &str = "No space left on device";

#[test]
fn training_on_a_full_disk_stops_naming_the_file_keeps_its_checkpoint_and_resumes() {
    let dir = tmp("train");
    exvit_data::synthetic::write_tinted_dataset(&dir.join("data"), 8, 36, 36).unwrap();
    // The uninterrupted run, on the ordinary disk: what a checkpoint weighs.
    let reference = dir.join("reference");
    let (ok, stdout, stderr) = exvit(&["train", "--config", &s(&tiny_run_config(&dir, &reference, 3, 1))]);
    assert!(ok, "{stdout}{stderr}");
    let ckpt = std::fs::metadata(reference.join("ckpt-00000018.safetensors")).unwrap().len();
    let Some(_disk) = Tmpfs::mount(&dir.join("disk"), 32) else { return };
    // A checkpoint holds the model, the EMA and AdamW's two moments (4 weights files); a save
    // writes the metrics, the checkpoint, then the model and EMA weights. Room for two
    // checkpoints: the second save fails writing its checkpoint; for two and a half: writing
    // the weights after it.
    let mut failed_at = Vec::new();
    for (k, leave) in [ckpt * 2, ckpt * 5 / 2].into_iter().enumerate() {
        let run = dir.join(format!("disk/run-{k}"));
        let cfg = tiny_run_config(&dir, &run, 3, 1);
        let filler = fill(&dir.join("disk"), leave + (64 << 10));
        let (ok, stdout, stderr) = exvit(&["train", "--config", &s(&cfg)]);
        assert!(!ok, "the run should not fit: {stdout}{stderr}");
        let failure = no_space_line(&stderr);
        assert!(failure.contains(&s(&run)), "the error names no file of the run: {stderr}");
        assert_eq!(temporaries(&run), Vec::<String>::new(), "a half-written file was left");
        let kept: Vec<_> =
            walk(&run).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ckpt-")).collect();
        assert!(!kept.is_empty(), "no checkpoint was kept");
        for c in &kept {
            // Whole: it parses, tensor by tensor.
            assert!(!tensor_bytes(c).is_empty(), "{}", c.display());
        }
        // Space freed: the resumed run ends as the uninterrupted one.
        std::fs::remove_file(filler).unwrap();
        let (ok, stdout, stderr) = exvit(&["train", "--resume", &s(&run)]);
        assert!(ok, "{stdout}{stderr}");
        assert_eq!(metrics(&run), metrics(&reference));
        assert!(tensor_bytes(&run.join("model.safetensors")) == tensor_bytes(&reference.join("model.safetensors")));
        eprintln!("train: stopped with `{failure}`; {} checkpoint(s) kept; resumed to the same run", kept.len());
        failed_at.push(failure);
        std::fs::remove_dir_all(&run).unwrap();
    }
    assert!(failed_at[0].contains("/ckpt-"), "{failed_at:?}");
    assert!(failed_at[1].contains("model.safetensors") || failed_at[1].contains("ema.safetensors"), "{failed_at:?}");
    drop(_disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first line of an error output that names the full disk.
fn no_space_line(s: &str) -> String {
    s.lines().find(|l| l.contains(NO_SPACE)).unwrap_or("").trim().to_string()
}

fn extract(data: &Path, out: &Path) -> (bool, String, String) {
    let args = exvit_tests::tiny_extract_args(data, out, "stem,stages.2,final_conv", 32);
    exvit(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn extraction_on_a_full_disk_stops_naming_the_shard_keeps_finished_ones_and_completes() {
    let dir = tmp("extract");
    let data = dir.join("data");
    exvit_data::synthetic::write_tinted_dataset(&data, 16, 40, 40).unwrap();
    let reference = dir.join("reference");
    let (ok, stdout, stderr) = extract(&data, &reference);
    assert!(ok, "{stdout}{stderr}");
    let shards: Vec<PathBuf> =
        walk(&reference).into_iter().filter(|p| p.extension().is_some_and(|e| e == "arrow")).collect();
    assert_eq!(shards.len(), 6);
    let shard = size_of(shards.iter().cloned()) / shards.len() as u64;
    let Some(_disk) = Tmpfs::mount(&dir.join("disk"), 8) else { return };
    let cache = dir.join("disk/cache");
    // Room for the manifest and about two shards (tmpfs counts whole 4 KiB pages).
    let filler = fill(&dir.join("disk"), 2 * shard.div_ceil(4096) * 4096 + 8192);
    let (ok, stdout, stderr) = extract(&data, &cache);
    assert!(!ok, "the cache should not fit: {stdout}{stderr}");
    let failure = stderr.clone();
    assert!(stderr.contains(NO_SPACE) && stderr.contains(&s(&cache)), "{stderr}");
    assert_eq!(temporaries(&cache), Vec::<String>::new(), "a half-written file was left");
    let finished: Vec<PathBuf> =
        walk(&cache).into_iter().filter(|p| p.extension().is_some_and(|e| e == "arrow")).collect();
    assert!(!finished.is_empty() && finished.len() < 6, "{} shards", finished.len());
    for f in &finished {
        let name = f.file_name().unwrap();
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(reference.join(name)).unwrap(), "{}", f.display());
    }
    std::fs::remove_file(filler).unwrap();
    let (ok, stdout, stderr) = extract(&data, &cache);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{} kept", finished.len())), "{stdout}");
    for r in &shards {
        let name = r.file_name().unwrap();
        assert_eq!(std::fs::read(cache.join(name)).unwrap(), std::fs::read(r).unwrap(), "{}", name.to_string_lossy());
    }
    eprintln!(
        "extract: stopped with `{}` after {} of 6 shards; resumed to the same cache",
        no_space_line(&failure),
        finished.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn manifests_and_reports_on_a_full_disk_fail_naming_the_file_and_leave_nothing() {
    let dir = tmp("outputs");
    let data = dir.join("data");
    exvit_data::synthetic::write_tinted_dataset(&data, 4, 36, 36).unwrap();
    let Some(_disk) = Tmpfs::mount(&dir.join("disk"), 4) else { return };
    let filler = fill(&dir.join("disk"), 0);
    // A dataset manifest.
    let manifests = dir.join("disk/manifests");
    let (ok, stdout, stderr) = exvit(&["data", "check", &s(&data), "--manifest-dir", &s(&manifests)]);
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains(NO_SPACE) && stderr.contains(&s(&manifests)), "{stderr}");
    assert_eq!(temporaries(&dir.join("disk")), Vec::<String>::new());
    let stderr_manifest = stderr;
    // A report (of the run directory fixture).
    let report = dir.join("disk/report.html");
    let fixture = exvit_tests::repo_root().join("tests/fixtures/rundir-v0/run-tiny-s0");
    let (ok, stdout, stderr) = exvit(&["report", &s(&fixture), "--out", &s(&report)]);
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains(NO_SPACE) && stderr.contains(&s(&dir.join("disk"))), "{stderr}");
    assert_eq!(temporaries(&dir.join("disk")), Vec::<String>::new());
    assert!(!report.exists());
    eprintln!("manifest: `{}`", no_space_line(&stderr_manifest));
    eprintln!("report: `{}`", no_space_line(&stderr));
    std::fs::remove_file(filler).unwrap();
    let (ok, stdout, stderr) = exvit(&["report", &s(&fixture), "--out", &s(&report)]);
    assert!(ok && report.exists(), "{stdout}{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
