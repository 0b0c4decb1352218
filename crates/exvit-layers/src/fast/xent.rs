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

use rayon::prelude::*;

use super::activation::exp_nonpositive;
use super::add_row;

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

/// Sums over rows `i` of `l = z + t·zp` (`[n, k]`, row-major; `y` the labels), where the
/// direction's logits are given as `(zp, zb)`: a matrix `[n, k]` and a row `[k]` added to each
/// of its rows as they are read (the bias of a direction, which saves the product a pass):
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
/// let (loss, slope) = xent_line(&[0.0, 0.0], (&[0.0, 0.0], &[1.0, 0.0]), 0.0, &[0], 2);
/// assert!((loss - 2f64.ln()).abs() < 1e-6 && (slope + 0.5).abs() < 1e-6);
/// ```
pub fn xent_line(z: &[f32], (zp, zb): (&[f32], &[f32]), t: f32, labels: &[u32], k: usize) -> (f64, f64) {
    check(z.len(), labels, k);
    assert_eq!(z.len(), zp.len(), "the direction's logits are not the logits' shape");
    assert_eq!(zb.len(), k, "the direction's bias is not [k]");
    let rows = rows_per_task(k);
    z.par_chunks(rows * k)
        .zip(zp.par_chunks(rows * k))
        .zip(labels.par_chunks(rows))
        .map(|((z, zp), y)| {
            let mut l = vec![0f32; k];
            let (mut loss, mut slope) = (0f64, 0f64);
            for ((z, zp), &y) in z.chunks_exact(k).zip(zp.chunks_exact(k)).zip(y) {
                let (a, b) = line_row(z, zp, zb, t, y as usize, &mut l);
                loss += a;
                slope += b;
            }
            (loss, slope)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1)) // in task order: the same sum every run
}

/// Moves `z` to `z + t·(zp + zb)` when `step` is `Some((t, zb))` (`buf` holding `zp` on entry,
/// `zb` `[k]` added to each of its rows, as in [`xent_line`]), then
/// overwrites `buf` with `g = scale·(softmax(z_i) − onehot(y_i))` row by row (`[n, k]`).
/// Returns `Σ_i (logsumexp(z_i) − z_{i,y_i})` and the column sums of `g` (`[k]`, the bias's
/// gradient). `g` takes the direction's buffer: once `z` has moved, `zp` is not needed, and a
/// probe at 50,000 x 1000 keeps one 200 MB matrix fewer.
///
/// # Panics
/// When the lengths disagree or a label is `≥ k`.
///
/// # Example
/// ```
/// use exvit_layers::fast::xent_grad;
///
/// let mut z = vec![0.0, 0.0];
/// let mut buf = vec![1.0, -1.0]; // the direction's logits
/// let (loss, bias_grad) = xent_grad(&mut z, Some((0.5, &[0.0, 0.0])), &mut buf, &[0], 2, 1.0);
/// assert_eq!(z, [0.5, -0.5]);
/// let p0 = 1.0 / (1.0 + (-1f32).exp());
/// assert!((buf[0] - (p0 - 1.0)).abs() < 1e-6 && (buf[1] - (1.0 - p0)).abs() < 1e-6);
/// assert!((loss + f64::from(p0).ln()).abs() < 1e-6);
/// assert_eq!(bias_grad, buf);
/// ```
pub fn xent_grad(
    z: &mut [f32],
    step: Option<(f32, &[f32])>,
    buf: &mut [f32],
    labels: &[u32],
    k: usize,
    scale: f32,
) -> (f64, Vec<f32>) {
    check(z.len(), labels, k);
    assert_eq!(z.len(), buf.len(), "the gradient buffer is not the logits' shape");
    if let Some((_, zb)) = step {
        assert_eq!(zb.len(), k, "the direction's bias is not [k]");
    }
    let rows = rows_per_task(k);
    let parts = z
        .par_chunks_mut(rows * k)
        .zip(buf.par_chunks_mut(rows * k))
        .zip(labels.par_chunks(rows))
        .map(|((z, buf), y)| {
            let mut loss = 0f64;
            let mut col = vec![0f32; k];
            for ((z, g), &y) in z.chunks_exact_mut(k).zip(buf.chunks_exact_mut(k)).zip(y) {
                loss += grad_row(z, step, y as usize, scale, g);
                add_row(&mut col, g);
            }
            (loss, col)
        })
        .collect::<Vec<_>>();
    // In task order (a rayon reduce would sum along its work-stealing tree: not reproducible).
    let loss = parts.iter().map(|p| p.0).sum();
    (loss, super::sum_in_order(parts.into_iter().map(|p| p.1).collect(), k))
}

/// Running max and sum of `exp` in lanes, then one horizontal step.
#[inline(always)]
fn hmax(v: &[f32; LANES]) -> f32 {
    v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

multiversion! {
    /// One row of [`xent_line`]: `l` is scratch of length `k`.
    fn line_row(z: &[f32], zp: &[f32], zb: &[f32], t: f32, y: usize, l: &mut [f32]) -> (f64, f64) {
        let k = z.len();
        let mut m = [f32::NEG_INFINITY; LANES];
        let split = k - k % LANES;
        let (zp, zb) = (&zp[..k], &zb[..k]);
        for (((l, z), zp), zb) in l[..split]
            .chunks_exact_mut(LANES)
            .zip(z.chunks_exact(LANES))
            .zip(zp.chunks_exact(LANES))
            .zip(zb.chunks_exact(LANES))
        {
            for j in 0..LANES {
                l[j] = z[j] + t * (zp[j] + zb[j]);
                m[j] = m[j].max(l[j]);
            }
        }
        let mut max = hmax(&m);
        for j in split..k {
            l[j] = z[j] + t * (zp[j] + zb[j]);
            max = max.max(l[j]);
        }
        let (mut s, mut d) = ([0f32; LANES], [0f32; LANES]);
        for ((l, zp), zb) in l[..split].chunks_exact(LANES).zip(zp.chunks_exact(LANES)).zip(zb.chunks_exact(LANES)) {
            for j in 0..LANES {
                let e = exp_nonpositive(l[j] - max);
                s[j] += e;
                d[j] += e * (zp[j] + zb[j]);
            }
        }
        let (mut sum, mut dot) = (s.iter().sum::<f32>(), d.iter().sum::<f32>());
        for j in split..k {
            let e = exp_nonpositive(l[j] - max);
            sum += e;
            dot += e * (zp[j] + zb[j]);
        }
        let lse = f64::from(max) + f64::from(sum).ln();
        (lse - f64::from(l[y]), f64::from(dot) / f64::from(sum) - f64::from(zp[y] + zb[y]))
    }
}

multiversion! {
    /// One row of [`xent_grad`]: `g` holds the direction's logits (less `zb`) on entry when `step` is given.
    fn grad_row(z: &mut [f32], step: Option<(f32, &[f32])>, y: usize, scale: f32, g: &mut [f32]) -> f64 {
        let k = z.len();
        let split = k - k % LANES;
        if let Some((t, zb)) = step {
            for ((z, zp), zb) in z.iter_mut().zip(g.iter()).zip(zb) {
                *z += t * (*zp + *zb);
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
                g[j] = e;
                s[j] += e;
            }
        }
        let mut sum = s.iter().sum::<f32>();
        for (g, &z) in g[split..].iter_mut().zip(&z[split..]) {
            let e = exp_nonpositive(z - max);
            *g = e;
            sum += e;
        }
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

    /// `zp` with `zb` added to each row.
    fn with_bias(zp: &[f32], zb: &[f32]) -> Vec<f32> {
        zp.chunks(zb.len()).flat_map(|row| row.iter().zip(zb).map(|(a, b)| a + b)).collect()
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
            // The direction's bias, added to each row of zp: the reference takes the sum.
            let zb = values(k, 5, 1.0);
            let full = with_bias(&zp, &zb);
            let y: Vec<u32> = (0..n as u32).map(|i| (i * 7) % k as u32).collect();
            for t in [0.0f32, 0.25, -1.5] {
                let (loss, slope) = xent_line(&z, (&zp, &zb), t, &y, k);
                let zp = &full;
                let want = loss64(&z, zp, f64::from(t), &y, k);
                assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "n {n} k {k} t {t}: loss {loss} vs {want}");
                let h = 1e-4;
                let fd =
                    (loss64(&z, zp, f64::from(t) + h, &y, k) - loss64(&z, zp, f64::from(t) - h, &y, k)) / (2.0 * h);
                assert!((slope - fd).abs() <= 1e-4 * fd.abs().max(1.0), "n {n} k {k} t {t}: slope {slope} vs {fd}");
            }
        }
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_after_the_step() {
        // One rayon task, and (k = 1000: 65 rows per task) several whose column sums add up.
        for (n, k) in [(20, 37), (200, 1000)] {
            gradient_case(n, k);
        }
    }

    fn gradient_case(n: usize, k: usize) {
        let z0 = values(n * k, 3, 6.0);
        let zp = values(n * k, 4, 2.0);
        let y: Vec<u32> = (0..n as u32).map(|i| (i * 5) % k as u32).collect();
        let (t, scale) = (0.75f32, 0.5f32);
        let zb = values(k, 6, 1.0);
        let mut z = z0.clone();
        let mut g = zp.clone();
        let (loss, col) = xent_grad(&mut z, Some((t, &zb)), &mut g, &y, k, scale);
        let zp = with_bias(&zp, &zb);
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
        for c in 0..k {
            let want: f64 = (0..n).map(|i| f64::from(g[i * k + c])).sum();
            assert!((f64::from(col[c]) - want).abs() < 1e-5, "column {c}: {} vs {want}", col[c]);
        }
        // Without a step, z stays.
        let mut z1 = z0.clone();
        let mut g1 = vec![f32::NAN; n * k]; // not read without a step
        let (l0, _) = xent_grad(&mut z1, None, &mut g1, &y, k, 1.0);
        assert!(g1.iter().all(|v| v.is_finite()));
        assert_eq!(z1, z0);
        assert!((l0 - loss64(&z0, &zp, 0.0, &y, k)).abs() < 1e-4);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_label_out_of_range_is_refused() {
        xent_line(&[0.0; 4], (&[0.0; 4], &[0.0; 2]), 0.0, &[0, 2], 2);
    }
}
