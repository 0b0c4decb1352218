//! burn-flex must run its kernels on rayon's pool (features `rayon` + `simd`). With burn's
//! default features off, flex builds single-threaded; this test fails if that happens.

use burn::prelude::*;
use burn_flex::{Flex, FlexDevice};

type B = Flex;

/// Per-thread CPU time (user + system, in clock ticks) of this process, by thread id.
fn thread_ticks() -> std::collections::HashMap<u32, u64> {
    let mut out = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let tid: u32 = e.unwrap().file_name().to_string_lossy().parse().unwrap();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else { continue };
        // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        out.insert(tid, f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap());
    }
    out
}

fn gettid() -> u32 {
    std::fs::read_link("/proc/thread-self").unwrap().file_name().unwrap().to_string_lossy().parse().unwrap()
}

#[test]
#[cfg(target_os = "linux")]
fn flex_runs_on_more_than_one_thread() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let dev = FlexDevice;
    let a = Tensor::<B, 2>::ones([768, 768], &dev);
    let b = Tensor::<B, 2>::ones([768, 768], &dev);
    let caller = gettid();
    let before = thread_ticks();
    // Enough work that each of two threads accrues several 10 ms clock ticks.
    pool.install(|| {
        for _ in 0..60 {
            let c = a.clone().matmul(b.clone());
            let _ = c.sum().into_scalar();
        }
    });
    let after = thread_ticks();
    let busy: Vec<u32> = after
        .iter()
        .filter(|(tid, t)| **tid != caller && **t > before.get(tid).copied().unwrap_or(0))
        .map(|(tid, _)| *tid)
        .collect();
    assert!(
        busy.len() >= 2,
        "flex ran its matmuls on {} pool thread(s) ({busy:?}); expected 2: is burn-flex built without its `rayon` feature?",
        busy.len()
    );
}
