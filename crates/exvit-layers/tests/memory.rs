//! `memory::retain_freed_memory`: after it, a large buffer that is freed and allocated again is
//! served from memory that is already mapped (no page faults); without it, glibc maps fresh
//! pages every time. Each case runs in a child process (this test binary, re-executed), since
//! malloc's settings are process-wide.

use std::process::Command;

const MIB: usize = 1 << 20;
/// Above glibc's largest mmap threshold (32 MiB), below the 64 MiB heap of a thread's arena
/// (libtest runs each test on its own thread).
const SIZE: usize = 48 * MIB;
/// Above the 64 MiB heap of a thread's own arena, which glibc maps directly whatever the
/// settings: allocated on a thread started after the settings, it must come from the main arena.
const THREAD_SIZE: usize = 96 * MIB;
const CHILD: &str = "EXVIT_MEMORY_TEST_CHILD";

/// Minor page faults of this process so far.
#[cfg(target_os = "linux")]
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: initialised by the successful call above.
    unsafe { usage.assume_init() }.ru_minflt
}

/// Allocates, touches and frees a 48 MiB buffer once, then counts the page faults of doing it a
/// second time. Only does anything in a child process.
#[cfg(target_os = "linux")]
#[test]
fn child_measure() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    if mode.starts_with("tuned") {
        assert!(exvit_layers::memory::retain_freed_memory(), "mallopt refused the settings");
    }
    let touch = |n: usize| {
        let v = vec![1u8; n];
        std::hint::black_box(&v);
    };
    let measure = move |n: usize| {
        touch(n);
        let before = minor_faults();
        touch(n);
        minor_faults() - before
    };
    let faults = if mode.ends_with("thread") {
        // A fresh thread, as rayon's workers are.
        std::thread::spawn(move || measure(THREAD_SIZE)).join().expect("measuring thread")
    } else {
        measure(SIZE)
    };
    println!("FAULTS {faults}");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn faults_in_child(mode: &str) -> i64 {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", "child_measure", "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child ({mode}) failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .find_map(|l| l.split_once("FAULTS ").map(|(_, n)| n))
        .unwrap_or_else(|| panic!("child ({mode}) printed no FAULTS line: {stdout}"))
        .trim()
        .parse()
        .expect("a fault count")
}

/// Runs the child with glibc's defaults and tuned (`suffix` picks where it allocates) and checks
/// that a freed `size`-byte buffer faults every page in again by default, and ~none when tuned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn check_reuse(size: usize, suffix: &str) {
    let pages = (size / 4096) as i64;
    let default = faults_in_child(&format!("default{suffix}"));
    let tuned = faults_in_child(&format!("tuned{suffix}"));
    assert!(
        default > pages / 4,
        "default malloc{suffix}: {default} faults for {pages} pages (the measurement itself is broken)"
    );
    assert!(tuned < pages / 100, "retained memory{suffix}: {tuned} faults for {pages} pages (default: {default})");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_buffers_are_reused_without_page_faults() {
    // glibc's default serves 48 MiB by mmap: every page faults in again (huge pages aside).
    check_reuse(SIZE, "");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_buffers_freed_on_other_threads_are_reused_too() {
    // A thread's own arena maps 96 MiB directly: every page faults in again.
    check_reuse(THREAD_SIZE, "-thread");
}
