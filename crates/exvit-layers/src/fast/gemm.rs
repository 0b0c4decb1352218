//! Strided f32 gemm (the `gemm` crate) on rayon's pool, and the shared output pointer.

/// A raw pointer that rayon tasks may share: each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: only used to write disjoint elements from different tasks (see each use).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
impl Shared {
    /// The pointer, offset (a method, so that closures capture the whole `Shared`).
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation.
        unsafe { self.0.add(offset) }
    }
}

/// An output buffer that parallel tasks fill: allocated but not zeroed. Each task writes every
/// element of its own part before anything reads it (zeroing it first, `vec![0.0; n]`, ran on
/// the calling thread before the parallel section: ~5 % of a batch-1 forward).
pub(super) struct Output(Vec<std::mem::MaybeUninit<f32>>);

impl Output {
    pub(super) fn new(n: usize) -> Self {
        let mut v = Vec::with_capacity(n);
        // SAFETY: MaybeUninit needs no initialisation.
        unsafe { v.set_len(n) };
        Self(v)
    }

    /// The start of the buffer, for tasks that write disjoint parts of it.
    pub(super) fn shared(&mut self) -> Shared {
        Shared(self.0.as_mut_ptr().cast())
    }

    /// The buffer as disjoint mutable chunks of `len` elements, one per task.
    pub(super) fn chunks(&mut self, len: usize) -> rayon::slice::ChunksMut<'_, std::mem::MaybeUninit<f32>> {
        use rayon::prelude::*;
        self.0.par_chunks_mut(len)
    }

    /// The filled buffer.
    ///
    /// # Safety
    /// Every element must have been written.
    pub(super) unsafe fn assume_init(self) -> Vec<f32> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        // SAFETY: same allocation, length and capacity; MaybeUninit<f32> has f32's layout, and
        // every element is initialised (the caller's promise).
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
    }
}

/// The row stride (in f32s) for a scratch matrix whose rows hold `len` elements: `len`, or
/// `len + 16` when `len` is a multiple of 256. Rows a multiple of 1 KiB apart (4–64 KiB at
/// the power-of-two sizes 32² to 128² pixels) start on the same few cache sets of the 8-way L1
/// and L2, so the gemm's packing, which reads a dozen rows or more in step, evicts its own
/// lines: at 128² the backward gemms of the 1x1 and 3x3 convs ran 1.3–1.7x slower per pixel
/// than at 120² or 136². One cache line more per row spreads them over the sets
/// (docs/performance.md, step 9).
pub(super) fn padded_stride(len: usize) -> usize {
    if len.is_multiple_of(256) {
        len + 16
    } else {
        len
    }
}

/// Copies the `rows × len` matrix at `src` (row stride `stride`) into `dst` with row stride
/// `ld` (resized to `rows · ld`; the padding is left as it is), and returns `dst`'s start.
pub(super) fn stage(
    src: &[f32],
    (rows, len, stride): (usize, usize, usize),
    ld: usize,
    dst: &mut Vec<f32>,
) -> *const f32 {
    dst.resize(rows * ld, 0.0);
    for r in 0..rows {
        dst[r * ld..][..len].copy_from_slice(&src[r * stride..][..len]);
    }
    dst.as_ptr()
}

/// Columns of an aliasing right-hand side copied at a time by [`matmul_staged`].
const STAGE: usize = 512;

/// [`matmul`] (single-threaded) with `rhs` a row-major `[k, n]` matrix of row stride `stride`
/// (a slice from its first element). When rows that far apart share cache sets
/// ([`padded_stride`]), `rhs` is copied [`STAGE`] columns at a time into `scratch` with padded
/// rows, and each stage multiplied from there into its columns of `dst`. Without `scratch`
/// `rhs` is never staged.
///
/// # Safety
/// As [`matmul`]; `rhs` must hold the `[k, n]` matrix.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul_staged(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    lhs_s: (usize, usize),
    rhs: &[f32],
    stride: usize,
    beta: f32,
    scratch: Option<&mut Vec<f32>>,
) {
    let Some(scratch) = scratch.filter(|_| padded_stride(stride) != stride) else {
        // SAFETY: the caller's promise.
        return unsafe { matmul((m, n, k), dst, dst_s, accumulate, lhs, lhs_s, rhs.as_ptr(), (1, stride), beta) };
    };
    let ld = padded_stride(STAGE);
    for c in (0..n).step_by(STAGE) {
        let len = STAGE.min(n - c);
        let staged = stage(&rhs[c..], (k, len, stride), ld, scratch);
        // SAFETY: columns c..c+len of dst (column stride dst_s.0); the staged [k, len] copy.
        unsafe { matmul((m, len, k), dst.add(c * dst_s.0), dst_s, accumulate, lhs, lhs_s, staged, (1, ld), beta) };
    }
}

/// Views a chunk whose every element has been written as `f32`s.
///
/// # Safety
/// Every element of `c` must be initialised.
pub(super) unsafe fn init(c: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; initialised (the caller's promise).
    unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// `dst[m×n] (+)= beta · lhs[m×k] · rhs[k×n]`, each matrix given by its pointer and its
/// (column, row) strides in elements; single-threaded (the tasks are the parallelism).
///
/// # Safety
/// Every pointer with its strides must address valid elements; `dst` must not alias the others.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    mnk: (usize, usize, usize),
    dst: *mut f32,
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    lhs_s: (usize, usize),
    rhs: *const f32,
    rhs_s: (usize, usize),
    beta: f32,
) {
    matmul_threads(mnk, dst, dst_s, accumulate, lhs, lhs_s, rhs, rhs_s, beta, 1)
}

/// [`matmul`] on `threads` of rayon's pool (gemm splits the output; one thread: no pool).
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul_threads(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_cs, dst_rs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (usize, usize),
    beta: f32,
    threads: usize,
) {
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

/// `out[n×k] = x[n×d] · w[d×k]` (+ `bias` `[k]` on every row), row-major slices, on all of
/// rayon's threads: the probe's logits of a point or a direction. `out` is overwritten (it may
/// hold anything on entry), so a caller reuses one buffer across calls. Without a bias the
/// product writes `out` once; a bias costs one more pass over it.
///
/// # Panics
/// When a slice's length disagrees with the shape.
///
/// # Example
/// ```
/// use exvit_layers::fast::matmul_nn;
///
/// let x = [1.0, 2.0, 3.0, 4.0]; // [2, 2]
/// let w = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]; // [2, 3]
/// let mut out = vec![f32::NAN; 6];
/// matmul_nn(&x, [2, 2], &w, 3, Some(&[0.5, 0.0, -1.0]), &mut out);
/// assert_eq!(out, [1.5, 2.0, 2.0, 3.5, 4.0, 6.0]);
/// matmul_nn(&x, [2, 2], &w, 3, None, &mut out);
/// assert_eq!(out, [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
/// ```
pub fn matmul_nn(x: &[f32], [n, d]: [usize; 2], w: &[f32], k: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    use rayon::prelude::*;
    assert!(x.len() == n * d && w.len() == d * k && out.len() == n * k, "matmul_nn: shapes disagree");
    assert!(bias.is_none_or(|b| b.len() == k), "matmul_nn: the bias is not [k]");
    if k == 0 {
        return;
    }
    if d == 0 {
        out.par_chunks_mut(k).for_each(|row| match bias {
            Some(b) => row.copy_from_slice(b),
            None => row.fill(0.0),
        });
        return;
    }
    if let Some(b) = bias {
        out.par_chunks_mut(k).for_each(|row| row.copy_from_slice(b));
    }
    // SAFETY: row-major [n, d], [d, k] and [n, k] slices of the checked lengths; out is a
    // unique borrow (read only when it holds the bias).
    unsafe {
        matmul_threads(
            (n, k, d),
            out.as_mut_ptr(),
            (1, k),
            bias.is_some(),
            x.as_ptr(),
            (1, d),
            w.as_ptr(),
            (1, k),
            1.0,
            rayon::current_num_threads(),
        )
    }
}

/// `out[d×k] = xᵀ · g` for row-major `x[n×d]` and `g[n×k]`, on all of rayon's threads: the
/// probe's weight gradient. The sum over the `n` rows is split among the threads, each
/// multiplying its block of rows into its own partial `[d×k]` (the first into `out`), and the
/// partials are added. With `n` far above `d` and `k` that keeps every core on one long
/// product: at 50,000 x 640 x 1000 on 2 threads (Intel Xeon), 0.22 s against 0.26–0.27 s when
/// gemm splits the `[d×k]` output.
///
/// # Panics
/// When a slice's length disagrees with the shape.
///
/// # Example
/// ```
/// use exvit_layers::fast::matmul_tn;
///
/// let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
/// let g = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [3, 2]
/// let mut out = vec![f32::NAN; 4];
/// matmul_tn(&x, [3, 2], &g, 2, &mut out);
/// assert_eq!(out, [6.0, 8.0, 8.0, 10.0]); // xᵀ·g
/// ```
pub fn matmul_tn(x: &[f32], [n, d]: [usize; 2], g: &[f32], k: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    assert!(x.len() == n * d && g.len() == n * k && out.len() == d * k, "matmul_tn: shapes disagree");
    let tasks = rayon::current_num_threads().min(n).max(1);
    let rows = n.div_ceil(tasks);
    let mut partials = vec![Vec::new(); tasks - 1];
    let first = std::iter::once(&mut *out);
    let rest = partials.iter_mut().map(|p| {
        p.resize(d * k, 0.0);
        p.as_mut_slice()
    });
    let outs: Vec<&mut [f32]> = first.chain(rest).collect();
    outs.into_par_iter().enumerate().for_each(|(t, dst)| {
        let r0 = (t * rows).min(n);
        let len = rows.min(n - r0);
        if len == 0 {
            dst.fill(0.0);
            return;
        }
        // SAFETY: rows r0..r0+len of x ([len, d], read transposed: column stride d, row
        // stride 1) and of g ([len, k]); dst is this task's own [d, k].
        unsafe {
            matmul(
                (d, k, len),
                dst.as_mut_ptr(),
                (1, k),
                false,
                x[r0 * d..].as_ptr(),
                (d, 1),
                g[r0 * k..].as_ptr(),
                (1, k),
                1.0,
            )
        }
    });
    for p in &partials {
        out.par_iter_mut().zip(p.par_iter()).for_each(|(o, &v)| *o += v);
    }
}
