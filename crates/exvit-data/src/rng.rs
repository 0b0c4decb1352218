//! exvit's own seeded randomness for data: every draw is a pure function of a key
//! (seed, epoch, sample position, …), so augmentation and sampling give the same result
//! whatever the number of threads, and a resumed run can redraw exactly what an
//! uninterrupted one drew (burn's and flex's generators are process-global and cannot be
//! saved).

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by a constant, with a strong
/// output mix. Cheap to seed from a key, which is how exvit uses it.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

use exvit_common::rng::{mix, GOLDEN};

impl Rng {
    /// A generator keyed by `seed` and a path of integers (for example `[epoch, index]`).
    pub fn keyed(seed: u64, key: &[u64]) -> Self {
        let mut s = mix(seed ^ 0x6578_7669_745f_6461); // "exvit_da"
        for &k in key {
            s = mix(s ^ mix(k.wrapping_add(GOLDEN)));
        }
        Rng { state: s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `[0, n)`, unbiased (Lemire's multiply-and-reject). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// A fair coin.
    pub fn coin(&mut self, p_true: f64) -> bool {
        self.unit() < p_true
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::keyed(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::keyed(7, &[1, 2]).next_u64(), Rng::keyed(7, &[2, 1]).next_u64());
        assert_ne!(Rng::keyed(7, &[1]).next_u64(), Rng::keyed(8, &[1]).next_u64());
    }

    #[test]
    fn below_is_uniform() {
        // Chi-square over 6 bins, 60,000 draws: 5 dof, p = 0.001 critical value 20.5.
        let mut r = Rng::keyed(1, &[]);
        let mut counts = [0f64; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1.0;
        }
        let chi2: f64 = counts.iter().map(|c| (c - 10_000.0).powi(2) / 10_000.0).sum();
        assert!(chi2 < 20.5, "chi2 {chi2} counts {counts:?}");
        let mean = (0..100_000).map(|_| r.unit()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }
}
