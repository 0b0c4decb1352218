//! Which weights a probe or CKA row was computed from.

use std::fmt;
use std::str::FromStr;

/// The weights of a feature set: a file, or the model's random initialisation from a seed.
/// Stored in the tables as its [`Display`](fmt::Display) string (`path` or `init(seed=S)`), the
/// format every exvit version has written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightsRef {
    /// A weights file (as given on the command line).
    File(String),
    /// The random initialisation drawn with this seed.
    Init {
        /// The seed.
        seed: u64,
    },
}

impl WeightsRef {
    /// The weights file `weights` (as displayed), or without one the initialisation from `seed`.
    pub fn of(weights: Option<&std::path::Path>, seed: u64) -> Self {
        match weights {
            Some(w) => WeightsRef::File(w.display().to_string()),
            None => WeightsRef::Init { seed },
        }
    }

    /// Whether these are random-init weights.
    pub fn is_init(&self) -> bool {
        matches!(self, WeightsRef::Init { .. })
    }
}

impl fmt::Display for WeightsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsRef::File(p) => f.write_str(p),
            WeightsRef::Init { seed } => write!(f, "init(seed={seed})"),
        }
    }
}

impl FromStr for WeightsRef {
    type Err = std::convert::Infallible;

    /// `init(seed=S)` (and a bare `init`, seed 0) is a random init; anything else a file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "init" {
            return Ok(WeightsRef::Init { seed: 0 });
        }
        let seed = s.strip_prefix("init(seed=").and_then(|r| r.strip_suffix(')')).and_then(|n| n.parse().ok());
        Ok(match seed {
            Some(seed) => WeightsRef::Init { seed },
            None => WeightsRef::File(s.to_string()),
        })
    }
}

impl From<&str> for WeightsRef {
    fn from(s: &str) -> Self {
        s.parse().unwrap_or_else(|e: std::convert::Infallible| match e {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_its_string() {
        for s in ["init(seed=3)", "runs/a/model.safetensors", "init(seed=x)", "my init(seed=3).safetensors"] {
            assert_eq!(WeightsRef::from(s).to_string(), s);
        }
        assert!(WeightsRef::from("init(seed=3)").is_init());
        assert!(!WeightsRef::from("init(seed=x)").is_init());
        assert_eq!(WeightsRef::from("init"), WeightsRef::Init { seed: 0 });
    }
}
