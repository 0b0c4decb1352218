//! Softmax cross-entropy over the rows of a logit matrix, fused for a line search.
//!
//! A linear probe's L-BFGS (exvit-probe) evaluates its objective at `x + t·d` for several step
//! sizes `t` along one direction. With the logits `z = X·W + b` of the current point and
//! `zp = X·D + db` of the direction, the logits at any step are `z + t·zp`: a trial step needs no
//! matrix product, only one pass over two `[n, k]` matrices. [`xent_line`] is that pass (the
//! loss and its derivative in `t`, nothing written); [`xent_grad`] moves `z` to the accepted step
//! and writes `dL/dlogits` for the one matrix product of the gradient. Each row is two sweeps
//! over `k` values held in L1, with the vectorised `exp` of the SiLU; rows are split among
//! rayon's threads and the sums are reduced in `f64`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::activation::exp_nonpositive;
use super::gemm::{init, Output};

/// Lanes of the running sums (one AVX-512 register of `f32`; the compiler vectorises the
/// lane-wise loops below, which a single running `f32` sum would forbid).
const LANES: usize = 16;

/// Rows per rayon task: about 64k logits.
fn rows_per_task(k: usize) -> usize {
    (65_536 / k.max(1)).max(1)
}

fn check(n_k: usize, labels: &[u32], k: usize) {
    assert!(k > 0 && n_k == labels.len() * k, "{n_k} logits are not {} rows of {k}", labels.len());
    assert!(labels.iter().all(|&y| (y as usize) < k), "a label is out of range for {k} classes");
}

/// Sums over rows `i` of `l = z + t·zp` (`[n, k]`, row-major; `y` the labels):
/// `Σ_i (logsumexp(l_i) − l_{i,y_i})`, the cross-entropy summed over rows, and
/// `Σ_i (softmax(l_i)·zp_i − zp_{i,y_i})`, its derivative in `t`.
///
/// # Panics
/// When the lengths disagree or a label is `≥ k`.
///
/// # Example
/// ```
/// use exvit_layers::fast::xent_line;
///
/// // One row, two classes, equal logits: the loss is ln 2, and moving along zp = (1, 0)
/// // raises the label's logit at rate 1 and the log-sum-exp at rate 1/2.
/// let (loss, slope) = xent_line(&[0.0, 0.0], &[1.0, 0.0], 0.0, &[0], 2);
/// assert!((loss - 2f64.ln()).abs() < 1e-6 && (slope + 0.5).abs() < 1e-6);
/// ```
pub fn xent_line(z: &[f32], zp: &[f32], t: f32, labels: &[u32], k: usize) -> (f64, f64) {
    check(z.len(), labels, k);
    assert_eq!(z.len(), zp.len(), "the direction's logits are not the logits' shape");
    let rows = rows_per_task(k);
    z.par_chunks(rows * k)
        .zip(zp.par_chunks(rows * k))
        .zip(labels.par_chunks(rows))
        .map(|((z, zp), y)| {
            let mut l = vec![0f32; k];
            let (mut loss, mut slope) = (0f64, 0f64);
            for ((z, zp), &y) in z.chunks_exact(k).zip(zp.chunks_exact(k)).zip(y) {
                let (a, b) = line_row(z, zp, t, y as usize, &mut l);
                loss += a;
                slope += b;
            }
            (loss, slope)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Moves `z` to `z + t·zp` when `step` is `Some((zp, t))`, then returns
/// `g = scale·(softmax(z_i) − onehot(y_i))` row by row (`[n, k]`) and `Σ_i (logsumexp(z_i) − z_{i,y_i})`.
///
/// # Panics
/// When the lengths disagree or a label is `≥ k`.
///
/// # Example
/// ```
/// use exvit_layers::fast::xent_grad;
///
/// let mut z = vec![0.0, 0.0];
/// let (g, loss) = xent_grad(&mut z, Some((&[1.0, -1.0], 0.5)), &[0], 2, 1.0);
/// assert_eq!(z, [0.5, -0.5]);
/// let p0 = 1.0 / (1.0 + (-1f32).exp());
/// assert!((g[0] - (p0 - 1.0)).abs() < 1e-6 && (g[1] - (1.0 - p0)).abs() < 1e-6);
/// assert!((loss + f64::from(p0).ln()).abs() < 1e-6);
/// ```
pub fn xent_grad(z: &mut [f32], step: Option<(&[f32], f32)>, labels: &[u32], k: usize, scale: f32) -> (Vec<f32>, f64) {
    check(z.len(), labels, k);
    if let Some((zp, _)) = step {
        assert_eq!(z.len(), zp.len(), "the direction's logits are not the logits' shape");
    }
    let rows = rows_per_task(k);
    let mut g = Output::new(z.len());
    // Without a step, each row's `zp` is empty (`grad_row` then leaves `z` as it is).
    let (zp, t) = step.unwrap_or((&[], 0.0));
    let loss = z
        .par_chunks_mut(rows * k)
        .zip(g.chunks(rows * k))
        .zip(labels.par_chunks(rows))
        .enumerate()
        .map(|(task, ((z, g), y))| {
            let zp = if zp.is_empty() { zp } else { &zp[task * rows * k..][..z.len()] };
            let mut loss = 0f64;
            for (r, ((z, g), &y)) in z.chunks_exact_mut(k).zip(g.chunks_exact_mut(k)).zip(y).enumerate() {
                let zp = if zp.is_empty() { zp } else { &zp[r * k..][..k] };
                loss += grad_row(z, zp, t, y as usize, scale, g);
            }
            loss
        })
        .sum();
    // SAFETY: every row of `g` was written by `grad_row` (the chunks cover it: checked lengths).
    (unsafe { g.assume_init() }, loss)
}

/// Running max and sum of `exp` in lanes, then one horizontal step.
#[inline(always)]
fn hmax(v: &[f32; LANES]) -> f32 {
    v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

multiversion! {
    /// One row of [`xent_line`]: `l` is scratch of length `k`.
    fn line_row(z: &[f32], zp: &[f32], t: f32, y: usize, l: &mut [f32]) -> (f64, f64) {
        let k = z.len();
        let mut m = [f32::NEG_INFINITY; LANES];
        let split = k - k % LANES;
        for ((l, z), zp) in l[..split].chunks_exact_mut(LANES).zip(z.chunks_exact(LANES)).zip(zp.chunks_exact(LANES)) {
            for j in 0..LANES {
                l[j] = z[j] + t * zp[j];
                m[j] = m[j].max(l[j]);
            }
        }
        let mut max = hmax(&m);
        for j in split..k {
            l[j] = z[j] + t * zp[j];
            max = max.max(l[j]);
        }
        let (mut s, mut d) = ([0f32; LANES], [0f32; LANES]);
        for (l, zp) in l[..split].chunks_exact(LANES).zip(zp.chunks_exact(LANES)) {
            for j in 0..LANES {
                let e = exp_nonpositive(l[j] - max);
                s[j] += e;
                d[j] += e * zp[j];
            }
        }
        let (mut sum, mut dot) = (s.iter().sum::<f32>(), d.iter().sum::<f32>());
        for j in split..k {
            let e = exp_nonpositive(l[j] - max);
            sum += e;
            dot += e * zp[j];
        }
        let lse = f64::from(max) + f64::from(sum).ln();
        (lse - f64::from(l[y]), f64::from(dot) / f64::from(sum) - f64::from(zp[y]))
    }
}

multiversion! {
    /// One row of [`xent_grad`] (`zp` empty: no step); returns the row's cross-entropy.
    fn grad_row(z: &mut [f32], zp: &[f32], t: f32, y: usize, scale: f32, g: &mut [MaybeUninit<f32>]) -> f64 {
        let k = z.len();
        let split = k - k % LANES;
        if !zp.is_empty() {
            for (z, zp) in z.iter_mut().zip(zp) {
                *z += t * *zp;
            }
        }
        let mut m = [f32::NEG_INFINITY; LANES];
        for z in z[..split].chunks_exact(LANES) {
            for j in 0..LANES {
                m[j] = m[j].max(z[j]);
            }
        }
        let max = z[split..].iter().fold(hmax(&m), |m, &v| m.max(v));
        let mut s = [0f32; LANES];
        for (g, z) in g[..split].chunks_exact_mut(LANES).zip(z.chunks_exact(LANES)) {
            for j in 0..LANES {
                let e = exp_nonpositive(z[j] - max);
                g[j].write(e);
                s[j] += e;
            }
        }
        let mut sum = s.iter().sum::<f32>();
        for (g, &z) in g[split..].iter_mut().zip(&z[split..]) {
            let e = exp_nonpositive(z - max);
            g.write(e);
            sum += e;
        }
        // SAFETY: every element of `g` was written just above.
        let g = unsafe { init(g) };
        let r = scale / sum;
        for v in g.iter_mut() {
            *v *= r;
        }
        g[y] -= scale;
        f64::from(max) + f64::from(sum).ln() - f64::from(z[y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform numbers in [-s, s) from a fixed LCG.
    fn values(n: usize, seed: u64, s: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * s
            })
            .collect()
    }

    /// The summed cross-entropy at `z + t·zp`, in f64.
    fn loss64(z: &[f32], zp: &[f32], t: f64, y: &[u32], k: usize) -> f64 {
        z.chunks(k)
            .zip(zp.chunks(k))
            .zip(y)
            .map(|((z, zp), &y)| {
                let l: Vec<f64> = z.iter().zip(zp).map(|(&a, &b)| f64::from(a) + t * f64::from(b)).collect();
                let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - l[y as usize]
            })
            .sum()
    }

    #[test]
    fn line_values_and_slope_match_f64_and_finite_differences() {
        // k not a multiple of the lanes; enough rows for several rayon tasks at k = 3000.
        for (n, k) in [(50, 37), (40, 3000), (3, 1)] {
            let z = values(n * k, 1, 8.0);
            let zp = values(n * k, 2, 3.0);
            let y: Vec<u32> = (0..n as u32).map(|i| (i * 7) % k as u32).collect();
            for t in [0.0f32, 0.25, -1.5] {
                let (loss, slope) = xent_line(&z, &zp, t, &y, k);
                let want = loss64(&z, &zp, f64::from(t), &y, k);
                assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "n {n} k {k} t {t}: loss {loss} vs {want}");
                let h = 1e-4;
                let fd =
                    (loss64(&z, &zp, f64::from(t) + h, &y, k) - loss64(&z, &zp, f64::from(t) - h, &y, k)) / (2.0 * h);
                assert!((slope - fd).abs() <= 1e-4 * fd.abs().max(1.0), "n {n} k {k} t {t}: slope {slope} vs {fd}");
            }
        }
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_after_the_step() {
        let (n, k) = (20, 37);
        let z0 = values(n * k, 3, 6.0);
        let zp = values(n * k, 4, 2.0);
        let y: Vec<u32> = (0..n as u32).map(|i| (i * 5) % k as u32).collect();
        let (t, scale) = (0.75f32, 0.5f32);
        let mut z = z0.clone();
        let (g, loss) = xent_grad(&mut z, Some((&zp, t)), &y, k, scale);
        let want_loss = loss64(&z0, &zp, f64::from(t), &y, k);
        assert!((loss - want_loss).abs() <= 1e-5 * want_loss, "loss {loss} vs {want_loss}");
        for i in 0..n {
            let row: Vec<f64> =
                (0..k).map(|c| f64::from(z0[i * k + c]) + f64::from(t) * f64::from(zp[i * k + c])).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for c in 0..k {
                assert!((f64::from(z[i * k + c]) - row[c]).abs() < 1e-5, "z moved to z + t·zp");
                let want = f64::from(scale) * ((row[c] - m).exp() / s - if c == y[i] as usize { 1.0 } else { 0.0 });
                assert!((f64::from(g[i * k + c]) - want).abs() < 1e-6, "row {i} class {c}: {} vs {want}", g[i * k + c]);
            }
        }
        // Without a step, z stays.
        let mut z1 = z0.clone();
        let (_, l0) = xent_grad(&mut z1, None, &y, k, 1.0);
        assert_eq!(z1, z0);
        assert!((l0 - loss64(&z0, &zp, 0.0, &y, k)).abs() < 1e-4);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_label_out_of_range_is_refused() {
        xent_line(&[0.0; 4], &[0.0; 4], 0.0, &[0, 2], 2);
    }
}
