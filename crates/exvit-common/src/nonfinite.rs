//! NaN and infinity in loaded tensors: one pass at load, and the one wording of the refusal.
//!
//! Weights holding NaN or Inf load without complaint into any framework and then make every
//! output NaN. exvit counts them as it reads a file (weights, checkpoints) and refuses the file,
//! naming the tensors, unless the caller allows it ([`NonFinite::Allow`], on the command line
//! `--allow-nonfinite`).
//!
//! # Example
//! ```
//! use exvit_common::nonfinite::NonFiniteCount;
//!
//! let mut count = NonFiniteCount::default();
//! count.add("stem.conv.weight", &[1.0, f32::NAN, 2.0]);
//! count.add("head.fc.bias", &[f32::INFINITY, f32::NEG_INFINITY]);
//! count.add("head.fc.weight", &[0.5]);
//! assert_eq!(count.to_string(), "3 non-finite value(s) in 2 tensor(s): `stem.conv.weight`: 1 NaN; `head.fc.bias`: 2 Inf");
//! ```

use std::fmt;

/// Whether tensors holding NaN or Inf may be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Refuse the file, naming the tensors (the default).
    #[default]
    Refuse,
    /// Load it anyway (`--allow-nonfinite`), e.g. to inspect a diverged run.
    Allow,
}

impl NonFinite {
    /// `Allow` when `allow`, else `Refuse`.
    pub fn allow_if(allow: bool) -> NonFinite {
        if allow {
            NonFinite::Allow
        } else {
            NonFinite::Refuse
        }
    }
}

/// The tensors of one file that hold NaN or Inf, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonFiniteCount {
    /// `(key, NaNs, infinities)` of each tensor with at least one.
    pub tensors: Vec<(String, usize, usize)>,
}

impl NonFiniteCount {
    /// Counts the NaNs and infinities of `values`, recorded under `key` when there are any.
    pub fn add(&mut self, key: &str, values: &[f32]) {
        let (mut nan, mut inf) = (0, 0);
        for v in values {
            if v.is_nan() {
                nan += 1;
            } else if v.is_infinite() {
                inf += 1;
            }
        }
        if nan + inf > 0 {
            self.tensors.push((key.to_string(), nan, inf));
        }
    }

    /// Whether every value added was finite.
    pub fn is_clean(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The number of non-finite values.
    pub fn values(&self) -> usize {
        self.tensors.iter().map(|(_, n, i)| n + i).sum()
    }
}

/// At most this many tensors are named.
const NAMED: usize = 5;

impl fmt::Display for NonFiniteCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} non-finite value(s) in {} tensor(s): ", self.values(), self.tensors.len())?;
        for (i, (key, nan, inf)) in self.tensors.iter().take(NAMED).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "`{key}`: ")?;
            match (nan, inf) {
                (0, i) => write!(f, "{i} Inf")?,
                (n, 0) => write!(f, "{n} NaN")?,
                (n, i) => write!(f, "{n} NaN, {i} Inf")?,
            }
        }
        if self.tensors.len() > NAMED {
            write!(f, "; and {} more tensor(s)", self.tensors.len() - NAMED)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_names_at_most_five_tensors() {
        let mut c = NonFiniteCount::default();
        c.add("clean", &[0.0, -1.0, f32::MAX, f32::MIN_POSITIVE]);
        assert!(c.is_clean());
        for k in 0..7 {
            c.add(&format!("t{k}"), &[f32::NAN, f32::INFINITY, 1.0]);
        }
        assert_eq!(c.values(), 14);
        let s = c.to_string();
        assert!(s.starts_with("14 non-finite value(s) in 7 tensor(s): `t0`: 1 NaN, 1 Inf; `t1`"), "{s}");
        assert!(s.ends_with("`t4`: 1 NaN, 1 Inf; and 2 more tensor(s)"), "{s}");
    }
}
