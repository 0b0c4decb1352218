//! Faults a long job meets, end to end through the binary (docs/reliability.md):
//!
//! - a second writer on a run directory or a feature cache in use is refused, naming the holder
//!   (pid); the lock of a process killed with SIGKILL is taken over with a warning;
//! - `exvit train` and `exvit probe extract` killed with SIGKILL at seeded random moments and
//!   started again end with the same metrics, weights and cache as an uninterrupted run.
//!
//! The quick tests kill a few times; `cargo test -p exvit --test faults -- --ignored` kills each
//! command at ≥20 random moments (a few minutes on 2 cores).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exvit_common::SplitMix64;
use exvit_rundir::read_metrics;
use exvit_tests::{tensor_bytes, tiny_run_config};

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).env("RAYON_NUM_THREADS", "2").output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_exvit"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start exvit")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Waits until `ready()` while `child` runs (panics if it ends first or after 120 s).
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < Duration::from_secs(120), "{what}: not after 120 s");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: the process ended ({status}) first");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lock file names `pid` as its holder.
fn held_by(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join(exvit_common::lock::LOCK_FILE))
        .is_ok_and(|t| t.lines().next() == Some(&format!("pid {pid}")))
}

/// What a finished run must reproduce: its metrics (timings aside) and its weights.
fn run_result(run: &Path) -> (Vec<String>, Vec<(String, Vec<u8>)>) {
    let rows = read_metrics(&run.join("metrics.parquet"))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                r.kind.as_str(),
                r.epoch,
                r.iteration,
                r.lr,
                r.loss,
                r.top1,
                r.top5,
                r.ema_top1,
                r.batch
            )
        })
        .collect();
    (rows, tensor_bytes(&run.join("model.safetensors")))
}

/// A finished cache: every file but the lock, with its bytes.
fn cache_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != exvit_common::lock::LOCK_FILE)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn extract_args(data: &Path, out: &Path) -> Vec<String> {
    exvit_tests::tiny_extract_args(data, out, "stem,stages.2:avgmax,final_conv", 64)
}

#[test]
fn a_second_trainer_on_a_run_in_use_is_refused_and_a_dead_ones_lock_taken_over() {
    let dir = tmp("lock-train");
    exvit_data::synthetic::write_tinted_dataset(&dir.join("data"), 8, 36, 36).unwrap();
    let out = dir.join("run");
    let cfg = tiny_run_config(&dir, &out, 3, 1);
    let mut first = spawn(&["train".into(), "--config".into(), s(&cfg)]);
    let pid = first.id();
    wait_for(&mut first, "a checkpoint", || held_by(&out, pid) && out.join("ckpt-00000002.safetensors").exists());
    // A second run on it, fresh or resumed, is refused and told who holds it.
    for args in [vec!["train", "--resume", &s(&out)], vec!["train", "--config", &s(&cfg)]] {
        let (ok, stdout, stderr) = exvit(&args);
        assert!(!ok, "{stdout}{stderr}");
        assert!(stderr.contains(&format!("in use by pid {}", first.id())), "{stderr}");
        assert!(stderr.contains("two writers would mix their files"), "{stderr}");
    }
    first.kill().unwrap(); // SIGKILL: the kernel drops its lock, its holder line stays.
    first.wait().unwrap();
    assert!(held_by(&out, first.id()));
    let (ok, stdout, stderr) = exvit(&["train", "--resume", &s(&out)]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("taking over the lock of pid {}", first.id())), "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join(exvit_common::lock::LOCK_FILE)).unwrap(), "", "released at the end");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_extraction_into_a_cache_in_use_is_refused_and_a_dead_ones_lock_taken_over() {
    let dir = tmp("lock-extract");
    let data = dir.join("data");
    exvit_data::synthetic::write_tinted_dataset(&data, 16, 48, 48).unwrap();
    let out = dir.join("cache");
    let args = extract_args(&data, &out);
    let mut first = spawn(&args);
    let pid = first.id();
    wait_for(&mut first, "a lock", || held_by(&out, pid));
    let second: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = exvit(&second);
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("in use by pid {}", first.id())), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
    let (ok, stdout, stderr) = exvit(&second);
    assert!(ok, "{stdout}{stderr}");
    // Unless it had finished before the kill, the second one took over the dead one's lock.
    if !stdout.contains("0 shards written") {
        assert!(stderr.contains(&format!("taking over the lock of pid {}", first.id())), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the command that `life(n)` starts (the n-th start of one job) with SIGKILL after a
/// seeded random delay in [0, `window`), over and over, until `kills` kills have landed; a
/// job that finishes first is checked with `check` and a new one begins. `saved(job)` tells
/// whether the job had saved some work (a checkpoint, a shard) when it was killed. Returns
/// (kills, kills after some work was saved, finished jobs).
fn kill_at_random(
    kills: usize,
    seed: u64,
    window: Duration,
    mut life: impl FnMut(usize, usize) -> Vec<String>,
    saved: impl Fn(usize) -> bool,
    mut check: impl FnMut(usize),
) -> (usize, usize, usize) {
    let mut rng = SplitMix64::new(seed);
    let (mut landed, mut after_work, mut job, mut starts) = (0, 0, 0, 0);
    while landed < kills {
        let mut child = spawn(&life(job, starts));
        starts += 1;
        let delay = window.mul_f64((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64);
        let t = Instant::now();
        while t.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        match child.try_wait().unwrap() {
            None => {
                let had_saved = saved(job);
                child.kill().unwrap();
                child.wait().unwrap();
                landed += 1;
                after_work += usize::from(had_saved);
            }
            Some(status) => {
                assert!(status.success(), "job {job}, start {starts}: {status}");
                check(job);
                job += 1;
                starts = 0;
            }
        }
    }
    // Let the last job finish.
    let mut child = spawn(&life(job, starts));
    let status = child.wait().unwrap();
    assert!(status.success(), "job {job}, last start: {status}");
    check(job);
    (landed, after_work, job + 1)
}

fn train_kills(kills: usize, seed: u64) {
    let dir = tmp(&format!("kills-train-{kills}"));
    exvit_data::synthetic::write_tinted_dataset(&dir.join("data"), 8, 36, 36).unwrap();
    let reference = dir.join("reference");
    let t = Instant::now();
    let (ok, stdout, stderr) = exvit(&["train", "--config", &s(&tiny_run_config(&dir, &reference, 3, 1))]);
    assert!(ok, "{stdout}{stderr}");
    let wall = t.elapsed();
    let expected = run_result(&reference);
    let has_checkpoint = |out: &Path| {
        std::fs::read_dir(out)
            .into_iter()
            .flatten()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("ckpt-"))
    };
    let (landed, after_work, jobs) = kill_at_random(
        kills,
        seed,
        wall,
        |job, _| {
            let out = dir.join(format!("killed-{job}"));
            let cfg = tiny_run_config(&dir, &out, 3, 1);
            // What a user does: resume when a checkpoint exists, else start again.
            if has_checkpoint(&out) {
                vec!["train".into(), "--resume".into(), s(&out)]
            } else {
                vec!["train".into(), "--config".into(), s(&cfg)]
            }
        },
        |job| has_checkpoint(&dir.join(format!("killed-{job}"))),
        |job| {
            let got = run_result(&dir.join(format!("killed-{job}")));
            assert_eq!(got.0, expected.0, "job {job}: metrics differ from the uninterrupted run's");
            assert!(got.1 == expected.1, "job {job}: weights differ from the uninterrupted run's");
        },
    );
    eprintln!(
        "train: {landed} SIGKILLs ({after_work} after a checkpoint) over {jobs} jobs, each equal to the uninterrupted run ({wall:.1?})"
    );
    assert!(after_work > 0, "no kill landed after a checkpoint: the test proves nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

fn extract_kills(kills: usize, seed: u64) {
    let dir = tmp(&format!("kills-extract-{kills}"));
    let data = dir.join("data");
    exvit_data::synthetic::write_tinted_dataset(&data, 40, 64, 64).unwrap();
    let reference = dir.join("reference");
    let t = Instant::now();
    let args = extract_args(&data, &reference);
    let (ok, stdout, stderr) = exvit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stdout}{stderr}");
    let wall = t.elapsed();
    let expected = cache_files(&reference);
    let (landed, after_work, jobs) = kill_at_random(
        kills,
        seed,
        wall,
        |job, _| extract_args(&data, &dir.join(format!("killed-{job}"))),
        |job| dir.join(format!("killed-{job}")).join("shard-00000.arrow").exists(),
        |job| {
            let got = cache_files(&dir.join(format!("killed-{job}")));
            let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
            assert_eq!(names(&got), names(&expected), "job {job}: other files than the uninterrupted cache's");
            assert!(got == expected, "job {job}: the cache differs from the uninterrupted one");
        },
    );
    eprintln!(
        "probe extract: {landed} SIGKILLs ({after_work} after a shard) over {jobs} jobs, each equal to the uninterrupted cache ({wall:.1?})"
    );
    assert!(after_work > 0, "no kill landed after a shard: the test proves nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_killed_at_random_moments_ends_as_an_uninterrupted_run() {
    train_kills(3, 11);
}

#[test]
fn extract_killed_at_random_moments_ends_as_an_uninterrupted_cache() {
    extract_kills(3, 12);
}

#[test]
#[ignore = "slow: 24 SIGKILLs of exvit train (a few minutes)"]
fn train_killed_at_24_random_moments() {
    train_kills(24, 2026);
}

#[test]
#[ignore = "slow: 24 SIGKILLs of exvit probe extract"]
fn extract_killed_at_24_random_moments() {
    extract_kills(24, 2027);
}
