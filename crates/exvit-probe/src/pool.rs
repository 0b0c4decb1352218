//! How a tap's feature map becomes one vector per image. The dimensionality of a probe is a
//! stated choice: global average (`gap`, C), average and max (`avgmax`, 2C), or a VISSL-style
//! grid of adaptive average pools (`gridK`, C·K²).

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::module::adaptive_avg_pool2d;
use exvit_zoo::TapOutput;
use serde::{Deserialize, Serialize};

use crate::error::ProbeError;

/// A pooling of a `[N, C, H, W]` map to `[N, D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Pooling {
    /// Global average pool: `D = C` (the default; what the classifier and ExShortcuts use).
    Gap,
    /// Global average and global max, concatenated: `D = 2C`.
    AvgMax,
    /// Adaptive average pool to `K x K` cells (PyTorch's cell bounds), flattened channel-major
    /// (`c·K² + i·K + j`): `D = C·K²`.
    Grid(usize),
    /// The tap is already a vector (`pooled`): taken as it is.
    None,
}

impl Pooling {
    /// Output width for a tap of `channels` channels.
    pub fn dim(&self, channels: usize) -> usize {
        match self {
            Pooling::Gap | Pooling::None => channels,
            Pooling::AvgMax => 2 * channels,
            Pooling::Grid(k) => channels * k * k,
        }
    }

    /// Pools a tap's output. A vector tap takes only `none`.
    pub fn apply<B: Backend>(&self, tap: &str, out: TapOutput<B>) -> Result<Tensor<B, 2>, ProbeError> {
        match (self, out) {
            (Pooling::None, TapOutput::Vector(v)) => Ok(v),
            (p, TapOutput::Vector(_)) => {
                Err(ProbeError::Tap(format!("tap `{tap}` is already a vector; its pooling is `none`, not `{p}`")))
            }
            (Pooling::None, TapOutput::Map(_)) => {
                Err(ProbeError::Tap(format!("tap `{tap}` is a feature map: choose a pooling (gap, avgmax, gridK)")))
            }
            (Pooling::Gap, TapOutput::Map(m)) => {
                let [n, c, h, w] = m.dims();
                Ok(m.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]))
            }
            (Pooling::AvgMax, TapOutput::Map(m)) => {
                let [n, c, h, w] = m.dims();
                let flat = m.reshape([n, c, h * w]);
                let avg = flat.clone().mean_dim(2).reshape([n, c]);
                let max = flat.max_dim(2).reshape([n, c]);
                Ok(Tensor::cat(vec![avg, max], 1))
            }
            (Pooling::Grid(k), TapOutput::Map(m)) => {
                let [n, c, _, _] = m.dims();
                Ok(adaptive_avg_pool2d(m, [*k, *k]).reshape([n, c * k * k]))
            }
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pooling::Gap => write!(f, "gap"),
            Pooling::AvgMax => write!(f, "avgmax"),
            Pooling::Grid(k) => write!(f, "grid{k}"),
            Pooling::None => write!(f, "none"),
        }
    }
}

impl FromStr for Pooling {
    type Err = ProbeError;
    fn from_str(s: &str) -> Result<Self, ProbeError> {
        match s {
            "gap" => Ok(Pooling::Gap),
            "avgmax" => Ok(Pooling::AvgMax),
            "none" => Ok(Pooling::None),
            _ => match s.strip_prefix("grid").map(|k| k.trim_start_matches(':').parse::<usize>()) {
                Some(Ok(k)) if (1..=16).contains(&k) => Ok(Pooling::Grid(k)),
                _ => Err(ProbeError::Tap(format!(
                    "unknown pooling `{s}`: gap, avgmax, gridK (K = 1..16, e.g. grid2) or none"
                ))),
            },
        }
    }
}

impl From<Pooling> for String {
    fn from(p: Pooling) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Pooling {
    type Error = ProbeError;
    fn try_from(s: String) -> Result<Self, ProbeError> {
        s.parse()
    }
}

/// A tap and its pooling: `stages.2:gap`. Also the name of its column in a cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TapSpec {
    /// The tap point (a name of `MobileVit::tap_names`).
    pub tap: String,
    /// Its pooling.
    pub pooling: Pooling,
}

impl TapSpec {
    /// Parses `name` or `name:pooling`; `default` is the pooling of a bare name (and `pooled`
    /// is always `none`).
    pub fn parse(s: &str, default: Pooling) -> Result<TapSpec, ProbeError> {
        let (tap, pooling) = match s.rsplit_once(':') {
            Some((t, p)) if !p.is_empty() && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) => {
                (t.to_string(), p.parse()?)
            }
            _ => (s.to_string(), default),
        };
        let pooling = if tap == "pooled" { Pooling::None } else { pooling };
        if tap.is_empty() {
            return Err(ProbeError::Tap(format!("empty tap name in `{s}`")));
        }
        Ok(TapSpec { tap, pooling })
    }

    /// The column name: `tap:pooling`.
    pub fn column(&self) -> String {
        format!("{}:{}", self.tap, self.pooling)
    }
}

impl fmt::Display for TapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.column())
    }
}
