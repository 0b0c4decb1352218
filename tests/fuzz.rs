//! exvit's seeded mutation fuzzer over every parser of untrusted input (`exvit_tests::fuzz`), on
//! stable Rust: each target replays its committed seeds and regression inputs
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`), then runs mutants of them for
//! `EXVIT_FUZZ_SECS` seconds (default 2; CI's short pass) or `EXVIT_FUZZ_RUNS` inputs.
//!
//! A panic, a hang (an input running over `EXVIT_FUZZ_TIMEOUT_SECS`, default 20) or an
//! allocation over 1 GiB is a finding: the input is saved under
//! `$TMPDIR/exvit-fuzz-findings/<target>/` and the test fails naming it. The long,
//! coverage-guided runs use libFuzzer on the same targets (`fuzz/`, docs/reliability.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use exvit_common::{fnv1a64, SplitMix64};
use exvit_tests::fuzz::{corpus, mutate, TARGETS};

/// The largest single allocation an input may cause.
const ALLOC_CAP: usize = 1 << 30;

/// How many threads are inside a target now: panics then are findings, reported at the end,
/// and their messages (from the target's own threads too, e.g. a rayon pool's) are not printed.
static IN_TARGET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The input each target is running now, with when it started: for the watchdog and for the
/// allocator's report (an allocation may come from a target's thread pool, not its own thread).
static RUNNING: Mutex<BTreeMap<&'static str, (Instant, Vec<u8>)>> = Mutex::new(BTreeMap::new());

/// Saves every running input as a finding of its target (the culprit is among them), naming
/// `what` went wrong.
fn report_running(what: &str) {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for (target, (_, input)) in running.iter() {
        let path = save_finding(target, input);
        eprintln!(
            "FINDING {target} (or another target running at the time): {what}; input saved to {}",
            path.display()
        );
    }
}

/// The system allocator, refusing one allocation over [`ALLOC_CAP`]: the running inputs are
/// saved and named, then the process aborts (as Rust does when an allocation fails).
struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            report_running(&format!("an allocation of {} bytes (over the {ALLOC_CAP} byte cap)", layout.size()));
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return unsafe { self.alloc(layout) };
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CAP {
            return unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn save_finding(target: &str, input: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join("exvit-fuzz-findings").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{:016x}.bin", fnv1a64(input)));
    let _ = std::fs::write(&p, input);
    p
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{key}={v}: not a number")))
}

/// Runs `target` over its corpus, then over mutants until the budget; panics listing findings.
fn fuzz(target: &'static str) {
    let t = TARGETS.iter().find(|t| t.name == target).expect("a target");
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ is empty: run tools/fuzz/make-seeds.sh");
    let secs = env_u64("EXVIT_FUZZ_SECS").unwrap_or(2);
    let runs = env_u64("EXVIT_FUZZ_RUNS");
    let timeout = Duration::from_secs(env_u64("EXVIT_FUZZ_TIMEOUT_SECS").unwrap_or(20));
    let max_len = seeds.iter().map(|s| s.1.len()).max().unwrap_or(0) * 2 + 64;

    start_watchdog(timeout);
    let findings: std::cell::RefCell<Vec<String>> = Default::default();
    let one = |input: &[u8], origin: &str| {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).insert(target, (Instant::now(), input.to_vec()));
        IN_TARGET.fetch_add(1, Ordering::SeqCst);
        let result = std::panic::catch_unwind(|| (t.run)(input));
        IN_TARGET.fetch_sub(1, Ordering::SeqCst);
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
        if let Err(payload) = result {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let p = save_finding(target, input);
            findings.borrow_mut().push(format!("{origin}: panicked: {msg} (input saved to {})", p.display()));
        }
    };
    for (path, bytes) in &seeds {
        one(bytes, &path.display().to_string());
    }
    let mut rng = SplitMix64::new(fnv1a64(target.as_bytes()) ^ env_u64("EXVIT_FUZZ_SEED").unwrap_or(0));
    let start = Instant::now();
    let mut n = 0u64;
    while match runs {
        Some(r) => n < r,
        None => start.elapsed() < Duration::from_secs(secs),
    } {
        let a = &seeds[(rng.next_u64() % seeds.len() as u64) as usize].1;
        let b = &seeds[(rng.next_u64() % seeds.len() as u64) as usize].1;
        let m = mutate(&mut rng, a, b, max_len);
        one(&m, &format!("mutant {n}"));
        n += 1;
        if findings.borrow().len() >= 5 {
            break;
        }
    }
    eprintln!(
        "{target}: {} corpus inputs and {n} mutants in {:.1?}, {} finding(s)",
        seeds.len(),
        start.elapsed(),
        findings.borrow().len()
    );
    let findings = findings.into_inner();
    for f in &findings {
        eprintln!("FINDING {target}: {f}");
    }
    assert!(findings.is_empty(), "{target}: {} finding(s):\n{}", findings.len(), findings.join("\n"));
}

/// One watchdog for all targets: an input running past `timeout` is saved and the process
/// aborted.
fn start_watchdog(timeout: Duration) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let stuck: Vec<(&str, Vec<u8>)> = RUNNING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, (t, _))| t.elapsed() > timeout)
                .map(|(k, (_, v))| (*k, v.clone()))
                .collect();
            for (target, input) in &stuck {
                let p = save_finding(target, input);
                eprintln!("FINDING {target}: an input ran over {timeout:?} (a hang); saved to {}", p.display());
            }
            if !stuck.is_empty() {
                std::process::abort();
            }
        });
    });
}

/// A target's panics are caught and counted (their messages would flood the output); the
/// harness prints each finding itself.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TARGET.load(Ordering::SeqCst) == 0 {
                default(info)
            }
        }))
    });
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                quiet_panics();
                fuzz(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(tested.contains(&t.name), "fuzz target `{}` has no test here", t.name);
            }
        }
    };
}

targets!(
    image,
    jpeg_window,
    safetensors,
    safetensors_header,
    tar_shard,
    matfile,
    cifar,
    manifest,
    feature_cache,
    run_config,
    model_toml,
    loc_csv,
);

/// The findings so far, each now a clear error naming the file (the replay above only shows
/// that they no longer panic or abort).
#[test]
fn corrupt_manifests_found_by_fuzzing_are_errors_naming_the_file() {
    let dir = exvit_tests::repo_root().join("fuzz/regressions/manifest");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let err = exvit_data::manifest::read_manifest(&p).expect_err("a corrupt manifest");
        let msg = err.to_string();
        assert!(msg.starts_with(&p.display().to_string()) && msg.contains("manifest: "), "{msg}");
        n += 1;
    }
    assert!(n >= 6, "{n} regression inputs");
}

/// Feature-cache manifests that lie (found by reading the code the fuzzer pointed at): zero
/// rows per shard divided by zero, 10^18 samples made `Cache::open` look for 10^18 shards (a
/// hang), column widths that overflow. Each is now an error naming the file.
#[test]
fn lying_cache_manifests_are_errors_naming_the_file() {
    let dir = exvit_tests::repo_root().join("fuzz/regressions/feature_cache");
    for (name, expect) in
        [("shard_rows_zero", "`shard_rows` is 0"), ("samples_1e18", "shards missing"), ("dims_overflow", "overflow")]
    {
        let bytes = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let (manifest, shard) = exvit_tests::fuzz::split2(&bytes);
        let cache = std::env::temp_dir().join(format!("exvit-fuzz-regression-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("manifest.json"), manifest).unwrap();
        std::fs::write(cache.join("shard-00000.arrow"), shard).unwrap();
        let err = exvit_probe::Cache::open(&cache)
            .and_then(|c| {
                let cols: Vec<String> = c.manifest.taps.iter().map(|t| t.spec.column()).collect();
                c.read(&cols.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
            })
            .expect_err(name)
            .to_string();
        assert!(err.contains(expect) && err.contains(&cache.display().to_string()), "{name}: {err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

/// A MAT file whose struct dims declared 2^31 elements made the reader allocate 16 GB for them
/// (found by the mutation fuzzer once it had an uncompressed seed); now an error.
#[test]
fn a_mat_file_declaring_more_elements_than_it_holds_is_an_error() {
    let dir = exvit_tests::repo_root().join("fuzz/regressions/matfile");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let err = exvit_data::matfile::read_mat(&bytes).expect_err("a corrupt MAT file");
        assert!(!err.is_empty());
        n += 1;
    }
    assert!(n >= 1);
}
