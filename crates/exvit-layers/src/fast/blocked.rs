//! The attention's small products, register-blocked with explicit vectors (AVX-512, AVX2 + FMA,
//! or a portable fallback, chosen at run time).
//!
//! A head is 16–64 wide, so `Q Kᵀ` has an inner dimension of 16–64 and `P V` an output width
//! of 16–64: shapes where a packing gemm spends much of its time packing (the `gemm` crate ran
//! mobilevit_xxs's attention products at about a quarter of the FMA peak; docs/performance.md,
//! step 12). Each kernel here takes a block of [`R`] rows, keeps its sums in vector registers
//! over the whole inner dimension, and reads its operands from small packed buffers in L1.
//! Written with explicit vectors because the compiler's auto-vectoriser, on the same loops
//! over arrays, chose gathers across the block's rows (3x slower than the gemm).
//!
//! The reference is the attention's generic path (`tests/fast.rs`: values, gradients, finite
//! differences, at head widths and token counts that are not multiples of the vectors).

/// Rows of a block: the lanes of the kernels' transposed blocks `[n, R]` (one AVX-512
/// register, two AVX2 registers).
pub(super) const R: usize = 16;
/// Rows per group of [`pack_transposed`]'s layout: keys for [`scores`], and a block's `R`
/// queries, packed as one group (`[hd, R]`, the layout [`scores`] reads them in).
pub(super) const JB: usize = R;
/// Columns of [`weighted_sum`] and [`outer_add`]'s matrices are a multiple of this.
pub(super) const VW: usize = 16;

/// A vector of `L` f32 lanes.
trait Simd: Copy {
    const L: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self + x·v`, one rounding where the hardware has FMA.
    unsafe fn fma(self, x: f32, v: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One AVX-512 register.
    #[derive(Clone, Copy)]
    pub(super) struct Z(__m512);

    impl super::Simd for Z {
        const L: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> Self {
            Z(_mm512_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller's promise (16 readable f32s).
            Z(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller's promise (16 writable f32s).
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn fma(self, x: f32, v: Self) -> Self {
            Z(_mm512_fmadd_ps(_mm512_set1_ps(x), v.0, self.0))
        }
    }

    /// One AVX2 register.
    #[derive(Clone, Copy)]
    pub(super) struct Y(__m256);

    impl super::Simd for Y {
        const L: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> Self {
            Y(_mm256_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller's promise (8 readable f32s).
            Y(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller's promise (8 writable f32s).
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(self, x: f32, v: Self) -> Self {
            Y(_mm256_fmadd_ps(_mm256_set1_ps(x), v.0, self.0))
        }
    }
}

/// Four plain lanes: the fallback on CPUs without AVX2 and FMA, and off x86.
#[derive(Clone, Copy)]
struct P4([f32; 4]);

impl Simd for P4 {
    const L: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        P4([0.0; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's promise (4 readable f32s).
        P4(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's promise (4 writable f32s).
        unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn fma(self, x: f32, v: Self) -> Self {
        P4(std::array::from_fn(|l| self.0[l] + x * v.0[l]))
    }
}

/// The widest instruction set the kernels use on this CPU: 2 for AVX-512F, 1 for AVX2 and FMA,
/// 0 for the portable code (and off x86). Tests lower it per thread ([`tests`]) to check each.
fn level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    let detected = if std::arch::is_x86_feature_detected!("avx512f") {
        2
    } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        1
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let detected = 0;
    #[cfg(test)]
    let detected = tests::CAP.with(|c| c.get()).min(detected);
    detected
}

/// Runs `Args::run::<Z, $c4>` on AVX-512, `::<Y, $c3>` on AVX2 + FMA, `::<P4, $c0>` elsewhere,
/// each compiled for its instruction set (the constant sizes the kernel's block of sums to the
/// register file: 32 registers of 16 lanes, or 16 of 8).
macro_rules! dispatch {
    ([$c4:literal, $c3:literal, $c0:literal], ($($a:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn v4(args: Args) {
                // SAFETY: the caller's promise.
                unsafe { args.run::<x86::Z, $c4>() }
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v3(args: Args) {
                // SAFETY: the caller's promise.
                unsafe { args.run::<x86::Y, $c3>() }
            }
            let args = Args($($a),*);
            match level() {
                // SAFETY: the CPU has AVX-512F; the arguments were checked by the caller.
                2 => return unsafe { v4(args) },
                // SAFETY: the CPU has AVX2 and FMA; the arguments were checked by the caller.
                1 => return unsafe { v3(args) },
                _ => {}
            }
        }
        // SAFETY: the arguments were checked by the caller.
        unsafe { Args($($a),*).run::<P4, $c0>() }
    }};
}

/// Packs the `[n, hd]` rows of `src` (row stride `stride`), times `scale`, transposed in groups
/// of [`JB`] rows, each `[hd, JB]` (a row's `hd` values a column), zeros past the last row: the
/// keys for [`scores`], or a block of at most `R` queries (one group, `[hd, R]`).
pub(super) fn pack_transposed(dst: &mut Vec<f32>, src: &[f32], (n, hd, stride): (usize, usize, usize), scale: f32) {
    let groups = n.div_ceil(JB);
    dst.clear();
    dst.resize(groups * hd * JB, 0.0);
    for j in 0..n {
        let (g, jj) = (j / JB, j % JB);
        for (d, &v) in src[j * stride..][..hd].iter().enumerate() {
            dst[(g * hd + d) * JB + jj] = v * scale;
        }
    }
}

/// `st[j, r] = Σ_d keys[j, d] · qt[d, r]` for the keys `j < n` rounded up to [`JB`], with
/// `qt [hd, R]` (a block of queries, transposed) and the keys packed by [`pack_transposed`]: the
/// scores of a block, transposed, `[n, R]` (`Q Kᵀ`, or `dY Vᵀ`). A group of keys at a time, its
/// sums over `d` in registers.
pub(super) fn scores(st: &mut [f32], qt: &[f32], keys: &[f32], hd: usize, n: usize) {
    let groups = n.div_ceil(JB);
    assert!(st.len() >= groups * JB * R && qt.len() >= hd * R && keys.len() >= groups * hd * JB);
    struct Args(*mut f32, *const f32, *const f32, usize, usize);
    impl Args {
        #[inline(always)]
        unsafe fn run<V: Simd, const J: usize>(self) {
            let Args(st, qt, keys, hd, groups) = self;
            const { assert!(R.is_multiple_of(4) && JB.is_multiple_of(J)) };
            // SAFETY (whole body): the bounds asserted above; L divides R, J divides JB.
            unsafe {
                for g in 0..groups {
                    for j0 in (0..JB).step_by(J) {
                        let mut acc = [[V::zero(); 4]; J];
                        let c = R / V::L;
                        for d in 0..hd {
                            let q = qt.add(d * R);
                            let qv: [V; 4] =
                                std::array::from_fn(|cc| if cc < c { V::load(q.add(cc * V::L)) } else { V::zero() });
                            let kd = keys.add((g * hd + d) * JB + j0);
                            for (jj, acc) in acc.iter_mut().enumerate() {
                                let x = *kd.add(jj);
                                for (a, &q) in acc.iter_mut().zip(&qv).take(c) {
                                    *a = a.fma(x, q);
                                }
                            }
                        }
                        for (jj, acc) in acc.iter().enumerate() {
                            for (cc, v) in acc.iter().enumerate().take(c) {
                                v.store(st.add((g * JB + j0 + jj) * R + cc * V::L));
                            }
                        }
                    }
                }
            }
        }
    }
    dispatch!([16, 8, 4], (st.as_mut_ptr(), qt.as_ptr(), keys.as_ptr(), hd, groups))
}

/// `y[r, :] = Σ_{j < n} wt[j, r] · m[j, :]` for the `R` rows of `y [R, hp]`, with `wt [n, R]`
/// (a block's weights, transposed, as [`scores`] gives them) and `m [n, hp]`: a vector of
/// columns and a group of rows at a time, their sums in registers over `j` (the output `P V`,
/// or `dS K`). `hp` is a multiple of [`VW`].
pub(super) fn weighted_sum(y: &mut [f32], wt: &[f32], m: &[f32], n: usize, hp: usize) {
    assert!(hp.is_multiple_of(VW) && y.len() >= R * hp && wt.len() >= n * R && m.len() >= n * hp);
    struct Args(*mut f32, *const f32, *const f32, usize, usize);
    impl Args {
        #[inline(always)]
        unsafe fn run<V: Simd, const RB: usize>(self) {
            let Args(y, wt, m, n, hp) = self;
            const { assert!(R.is_multiple_of(RB)) };
            // SAFETY (whole body): the bounds asserted above; L divides VW.
            unsafe {
                for r0 in (0..R).step_by(RB) {
                    for c0 in (0..hp).step_by(V::L) {
                        let mut acc = [V::zero(); RB];
                        for j in 0..n {
                            let mv = V::load(m.add(j * hp + c0));
                            let wj = wt.add(j * R + r0);
                            for (r, a) in acc.iter_mut().enumerate() {
                                *a = a.fma(*wj.add(r), mv);
                            }
                        }
                        for (r, v) in acc.iter().enumerate() {
                            v.store(y.add((r0 + r) * hp + c0));
                        }
                    }
                }
            }
        }
    }
    dispatch!([16, 8, 8], (y.as_mut_ptr(), wt.as_ptr(), m.as_ptr(), n, hp))
}

/// `acc[j, :] += Σ_r wt[j, r] · x[r, :]` for the `n` rows of `acc [n, hp]`, with `wt [n, R]` and
/// `x [R, hp]`: a block's share of `dK = dSᵀ Q` or `dV = Pᵀ dY`, a vector of a group of the
/// block's rows of `x` in registers. `hp` is a multiple of [`VW`].
pub(super) fn outer_add(acc: &mut [f32], wt: &[f32], x: &[f32], n: usize, hp: usize) {
    assert!(hp.is_multiple_of(VW) && acc.len() >= n * hp && wt.len() >= n * R && x.len() >= R * hp);
    struct Args(*mut f32, *const f32, *const f32, usize, usize);
    impl Args {
        #[inline(always)]
        unsafe fn run<V: Simd, const RB: usize>(self) {
            let Args(acc, wt, x, n, hp) = self;
            const { assert!(R.is_multiple_of(RB)) };
            // SAFETY (whole body): the bounds asserted above; L divides VW.
            unsafe {
                for r0 in (0..R).step_by(RB) {
                    for c0 in (0..hp).step_by(V::L) {
                        let xs: [V; RB] = std::array::from_fn(|r| V::load(x.add((r0 + r) * hp + c0)));
                        for j in 0..n {
                            let aj = acc.add(j * hp + c0);
                            let wj = wt.add(j * R + r0);
                            let mut a = V::load(aj);
                            for (r, xr) in xs.iter().enumerate() {
                                a = a.fma(*wj.add(r), *xr);
                            }
                            a.store(aj);
                        }
                    }
                }
            }
        }
    }
    dispatch!([16, 8, 8], (acc.as_mut_ptr(), wt.as_ptr(), x.as_ptr(), n, hp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// The highest [`level`] the kernels may use on this thread.
        pub(super) static CAP: Cell<u8> = const { Cell::new(u8::MAX) };
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Each kernel at every instruction set this CPU has, against plain f64 loops, at head widths
    /// and key counts that are not multiples of the vectors or of the key groups.
    #[test]
    fn kernels_equal_plain_loops_at_every_instruction_set() {
        for cap in 0..=level() {
            CAP.with(|c| c.set(cap));
            for (n, hd) in [(1usize, 1usize), (7, 12), (16, 16), (33, 20), (64, 24), (100, 36), (256, 16)] {
                let hp = hd.next_multiple_of(VW);
                let what = |k: &str| format!("{k} (level {cap}, n {n}, hd {hd})");
                // scores: st[j, r] = Σ_d key[j, d] · qt[d, r].
                let key = values(n * hd, 1);
                let qt = values(hd * R, 2);
                let mut packed = Vec::new();
                pack_transposed(&mut packed, &key, (n, hd, hd), 1.0);
                let mut st = vec![f32::NAN; n.next_multiple_of(JB) * R];
                scores(&mut st, &qt, &packed, hd, n);
                let want: Vec<f64> = (0..n * R)
                    .map(|i| (0..hd).map(|d| key[i / R * hd + d] as f64 * qt[d * R + i % R] as f64).sum())
                    .collect();
                close(&st[..n * R], &want, &what("scores"));
                // weighted_sum: y[r, :] = Σ_j wt[j, r] · m[j, :].
                let wt = values(n * R, 3);
                let mut m = values(n * hp, 4);
                for row in m.chunks_exact_mut(hp) {
                    row[hd..].fill(0.0);
                }
                let mut y = vec![f32::NAN; R * hp];
                weighted_sum(&mut y, &wt, &m, n, hp);
                let want: Vec<f64> = (0..R * hp)
                    .map(|i| (0..n).map(|j| wt[j * R + i / hp] as f64 * m[j * hp + i % hp] as f64).sum())
                    .collect();
                close(&y, &want, &what("weighted_sum"));
                // outer_add: acc[j, :] += Σ_r wt[j, r] · x[r, :].
                let x = values(R * hp, 5);
                let mut acc = values(n * hp, 6);
                let want: Vec<f64> = (0..n * hp)
                    .map(|i| {
                        acc[i] as f64
                            + (0..R).map(|r| wt[i / hp * R + r] as f64 * x[r * hp + i % hp] as f64).sum::<f64>()
                    })
                    .collect();
                outer_add(&mut acc, &wt, &x, n, hp);
                close(&acc, &want, &what("outer_add"));
            }
        }
        CAP.with(|c| c.set(u8::MAX));
    }
}
