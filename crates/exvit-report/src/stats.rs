//! Uncertainty of a difference between two models: a t interval over paired seeds, and a
//! paired bootstrap over evaluation images.

use exvit_common::SplitMix64;

/// `mean ± std` (sample std; 0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

/// `mean ± std` as text (`–` for none, the value alone for one).
pub fn pm(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    if v.is_empty() {
        "–".into()
    } else if v.len() == 1 {
        format!("{m:.2}")
    } else {
        format!("{m:.2} ± {s:.2}")
    }
}

/// Two-sided 95% quantiles of Student's t, `t_{0.975, df}` for df = 1..=30 (from the standard
/// table; scipy.stats.t.ppf(0.975, df) agrees to the printed digits).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// `t_{0.975, df}`; the normal 1.960 beyond df 30 (within 2% of t there).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        _ => 1.960,
    }
}

/// A point estimate and a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The estimate.
    pub mean: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// The mean of paired differences `d` and its 95% t interval (`mean ± t·s/√n`); `None` for
/// fewer than two differences.
pub fn t_interval(d: &[f64]) -> Option<Interval> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let m = d.iter().sum::<f64>() / n as f64;
    let s = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let h = t975(n - 1) * s / (n as f64).sqrt();
    Some(Interval { mean: m, lo: m - h, hi: m + h })
}

/// Paired bootstrap over images of the top-1 difference (in points) between models A and B.
/// `a[s][i]` / `b[s][i]`: whether seed `s`'s model got image `i` right (the same images, in the
/// same order, for every seed of both). Each image's difference is averaged over the seeds
/// first, then the images are resampled with replacement `resamples` times; the interval is
/// the 2.5 and 97.5 percentiles of the resampled means. It measures the uncertainty due to
/// the finite evaluation set only (the seeds are held fixed); the t interval over seeds
/// measures that of training. `None` when the inputs are empty or ragged.
pub fn paired_bootstrap(a: &[Vec<bool>], b: &[Vec<bool>], resamples: usize, seed: u64) -> Option<Interval> {
    let n = a.first()?.len();
    if n == 0 || a.len() != b.len() || a.iter().chain(b).any(|v| v.len() != n) || resamples == 0 {
        return None;
    }
    let s = a.len() as f64;
    let d: Vec<f64> = (0..n)
        .map(|i| a.iter().zip(b).map(|(x, y)| x[i] as i32 as f64 - y[i] as i32 as f64).sum::<f64>() * 100.0 / s)
        .collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| d[rng.below_fast(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some(Interval { mean, lo: q(0.025), hi: q(0.975) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_by_hand() {
        // d = [1, 2, 3]: mean 2, s = 1, half-width 4.303 / sqrt(3) = 2.4844.
        let i = t_interval(&[1.0, 2.0, 3.0]).unwrap();
        assert!((i.mean - 2.0).abs() < 1e-12);
        assert!((i.hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!((i.lo - 2.0 + 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(t_interval(&[1.0]).is_none());
    }

    #[test]
    fn bootstrap_matches_the_normal_approximation() {
        // One seed; A right on 60% of 20,000 images, B on 50%, on independent patterns. The
        // per-image difference has mean 10 points and variance p_a(1-p_a) + p_b(1-p_b) (in
        // units of 100^2), so the 95% half-width is 1.96·sqrt(0.24 + 0.25)/sqrt(n)·100.
        let n = 20_000;
        let mut rng = SplitMix64::new(7);
        let a: Vec<bool> = (0..n).map(|_| rng.below_fast(10) < 6).collect();
        let b: Vec<bool> = (0..n).map(|_| rng.below_fast(2) == 0).collect();
        let i = paired_bootstrap(std::slice::from_ref(&a), std::slice::from_ref(&b), 2000, 1).unwrap();
        let pa = a.iter().filter(|&&x| x).count() as f64 / n as f64;
        let pb = b.iter().filter(|&&x| x).count() as f64 / n as f64;
        assert!((i.mean - 100.0 * (pa - pb)).abs() < 1e-9);
        let half = 1.96 * ((pa * (1.0 - pa) + pb * (1.0 - pb)) / n as f64).sqrt() * 100.0;
        // The estimate also carries the covariance of A and B, ~0 here by construction.
        assert!(((i.hi - i.lo) / 2.0 / half - 1.0).abs() < 0.1, "half-width {} vs {half}", (i.hi - i.lo) / 2.0);
        assert!(i.lo < i.mean && i.mean < i.hi);
        // Pairing: the same predictions on both sides give exactly zero, with no width.
        let z = paired_bootstrap(std::slice::from_ref(&a), std::slice::from_ref(&a), 500, 1).unwrap();
        assert_eq!((z.mean, z.lo, z.hi), (0.0, 0.0, 0.0));
        // Ragged input is refused.
        assert!(paired_bootstrap(std::slice::from_ref(&a), &[b[..10].to_vec()], 10, 1).is_none());
    }

    #[test]
    fn bootstrap_averages_over_seeds() {
        // Two seeds: A beats B on the first image in seed 0 only; mean difference 0.5 images
        // of 2 = 25 points.
        let a = vec![vec![true, false], vec![false, false]];
        let b = vec![vec![false, false], vec![false, false]];
        let i = paired_bootstrap(&a, &b, 200, 3).unwrap();
        assert!((i.mean - 25.0).abs() < 1e-12);
        assert!(i.lo >= 0.0 && i.hi <= 50.0);
    }
}
