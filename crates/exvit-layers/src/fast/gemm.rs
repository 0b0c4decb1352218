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
/// rows, and each stage multiplied from there into its columns of `dst`.
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
    scratch: &mut Vec<f32>,
) {
    if padded_stride(stride) == stride {
        // SAFETY: the caller's promise.
        return unsafe { matmul((m, n, k), dst, dst_s, accumulate, lhs, lhs_s, rhs.as_ptr(), (1, stride), beta) };
    }
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
