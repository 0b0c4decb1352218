//! Where the fused kernels' callers should run: on rayon's pool.

/// Runs `f` on a thread of rayon's global pool (the calling thread waits for it), or directly
/// when the caller already is a pool thread (any pool's).
///
/// Every fused kernel splits its work with rayon. Called from outside the pool (a program's main
/// thread), each parallel op hands its work to the pool and sleeps until it is done, even an op
/// too small to split, and the pool's threads fall asleep and are woken between ops: at batch 1
/// that cost about a fifth of a mobilevit_xxs forward on 2 cores (docs/performance.md). On a
/// pool thread an op too small to split runs inline, and the other threads steal the rest.
/// Wrap whole forward passes, not single ops; on other backends it only moves the work to
/// another thread.
///
/// Not for autodiff work when other threads may run autodiff too (data-parallel replicas, tests
/// in parallel): burn's graph lock is held across a backward's parallel ops, and a pool thread
/// waiting inside one of them may steal a whole wrapped pass that then waits on that lock,
/// beneath its holder on the same stack: a deadlock. Inference on a plain backend is safe.
///
/// # Example
/// ```
/// use burn::prelude::*;
/// use burn_flex::Flex;
/// use exvit_layers::fast::{on_pool, silu};
///
/// let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.0, 2.0], &Default::default());
/// let y = on_pool(|| silu(x));
/// assert_eq!(y.dims(), [3]);
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
