//! Process-wide memory tuning for the CPU backend.
//!
//! burn-flex allocates a fresh output buffer for every operation. With glibc's default malloc,
//! every buffer above the mmap threshold (128 KiB, rising to at most 32 MiB) is a fresh `mmap`:
//! its pages fault in one by one on first touch (a read first maps the shared zero page, and the
//! write then copies it and flushes the TLB of every core running the process), and `free`
//! unmaps it again, with another TLB shootdown. A mobilevit_xxs forward pass at batch 16 spent
//! ~40% of its samples in the kernel doing this (docs/performance.md, step 2).
//!
//! [`retain_freed_memory`] tells glibc to serve every allocation from its heap (no direct
//! `mmap`) and never to give the top of the heap back: a buffer freed by one operation is
//! reused, already mapped, by the next. Peak memory is unchanged (the same buffers are alive at
//! the same time); what the process has touched stays resident until it exits, which is what a
//! training or evaluation process wants. It is the allocator-level form of buffer reuse across
//! iterations: PyTorch's caching allocators do the same on the GPU.
//!
//! It also restricts glibc to one arena. A thread other than the main one otherwise allocates
//! from its own arena, whose heaps are at most 64 MiB, and glibc maps a larger request directly
//! whatever the settings above. exvit's inference runs on rayon's pool (`fast::on_pool`), so its
//! outputs are allocated on pool threads: mobilevit_s's forward at batch 16 faulted ~150,000
//! pages per pass (~590 MB mapped and unmapped); one arena took it from 799 to 632 ms per pass
//! (2026-12-07, AMD EPYC, medians of 5 alternating rounds; docs/performance.md, step 5). The
//! one lock is not contended: the kernels allocate a few large buffers per op.
//!
//! Call it once at the start of `main`, before other threads allocate. It is a no-op returning
//! `false` where the C library is not glibc.

/// Makes glibc keep freed memory for reuse (see the module documentation). Returns whether the
/// settings were applied.
pub fn retain_freed_memory() -> bool {
    imp::retain_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn retain_freed_memory() -> bool {
        // SAFETY: mallopt only changes malloc's parameters; it is safe to call at any time.
        unsafe {
            // No allocation is served by a private mmap, so none is unmapped on free.
            let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            // Free space at the top of the heap is never trimmed (mallopt takes an int).
            let no_trim = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1;
            // Every thread allocates from the main arena, whose heap the two settings above
            // govern (a thread's own arena maps requests above 64 MiB directly).
            let one_arena = libc::mallopt(libc::M_ARENA_MAX, 1) == 1;
            no_mmap && no_trim && one_arena
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn retain_freed_memory() -> bool {
        false
    }
}
