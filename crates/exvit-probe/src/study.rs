//! Probes and CKA over whole caches: what `exvit probe fit`, `exvit probe cka` and `exvit demo`
//! run, producing table rows.

use burn::prelude::*;

use crate::cache::{Cache, Features, Manifest};
use crate::cka::linear_cka_host;
use crate::error::ProbeError;
use crate::probe::{run_probe, ProbeConfig};
use exvit_rundir::{CkaRow, ProbeRow, WeightsRef};

impl Manifest {
    /// The weights the cache was extracted from, as the tables record them.
    pub fn weights_ref(&self) -> WeightsRef {
        WeightsRef::of(self.weights.as_deref().map(std::path::Path::new), self.init_seed)
    }
}

/// Fits one probe per set of columns (a set of several is probed as their concatenation) on
/// `train`, evaluated on `eval`; `each` sees every row as it is made. The two caches must come
/// from the same model, weights and classes.
pub fn probe_caches<B: Backend>(
    train: &Cache,
    eval: &Cache,
    sets: &[Vec<String>],
    cfg: &ProbeConfig,
    device: &B::Device,
    mut each: impl FnMut(&ProbeRow),
) -> Result<Vec<ProbeRow>, ProbeError> {
    let (mt, me) = (&train.manifest, &eval.manifest);
    if (mt.model.as_str(), &mt.weights_fnv, mt.init_seed) != (me.model.as_str(), &me.weights_fnv, me.init_seed) {
        return Err(ProbeError::Config(format!(
            "{} and {} were extracted from different models or weights",
            train.dir.display(),
            eval.dir.display()
        )));
    }
    if mt.classes != me.classes {
        return Err(ProbeError::Config(format!(
            "{} and {} have different classes",
            train.dir.display(),
            eval.dir.display()
        )));
    }
    let mut rows = Vec::new();
    for set in sets {
        let refs: Vec<&str> = set.iter().map(String::as_str).collect();
        let specs = refs.iter().map(|s| train.find(s).map(|t| t.spec.clone())).collect::<Result<Vec<_>, _>>()?;
        let (ft, fe) = (train.read(&refs)?, eval.read(&refs)?);
        let r = run_probe::<B>(ft.x, &ft.labels, fe.x, &fe.labels, mt.classes.len(), cfg, device)?;
        let row = ProbeRow {
            model: mt.model.clone(),
            weights: mt.weights_ref(),
            tap: specs.iter().map(|s| s.tap.as_str()).collect::<Vec<_>>().join("+"),
            pooling: specs.iter().map(|s| s.pooling.to_string()).collect::<Vec<_>>().join("+"),
            dim: r.dim as u32,
            wd: r.wd,
            top1: r.top1,
            top5: r.top5,
            n_train: r.n_train as u32,
            n_eval: r.n_eval as u32,
            seed: cfg.seed,
            seconds: r.seconds,
        };
        each(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Linear CKA between every column of `a` (`cols_a`) and every column of `b` (`cols_b`; `b`
/// defaults to `a`, whose matrix is symmetric and is computed once per pair), over the first
/// `max_images` images. The two caches must hold the same images in the same order.
pub fn cka_caches<B: Backend>(
    a: &Cache,
    b: Option<&Cache>,
    cols_a: &[String],
    cols_b: &[String],
    max_images: Option<usize>,
    device: &B::Device,
) -> Result<Vec<CkaRow>, ProbeError> {
    let limit = |f: Features| -> Features {
        match max_images {
            Some(n) if n < f.x.rows => Features {
                x: f.x.select_rows(&(0..n).collect::<Vec<_>>()),
                labels: f.labels[..n].to_vec(),
                indices: f.indices[..n].to_vec(),
                dims: f.dims,
            },
            _ => f,
        }
    };
    let read = |c: &Cache, cols: &[String]| -> Result<Vec<Features>, ProbeError> {
        cols.iter().map(|col| Ok(limit(c.read(&[col.as_str()])?))).collect()
    };
    let fa = read(a, cols_a)?;
    let fb = match b {
        Some(c) => read(c, cols_b)?,
        None => read(a, cols_b)?,
    };
    if let (Some(x), Some(y)) = (fa.first(), fb.first()) {
        if x.indices != y.indices {
            return Err(ProbeError::Config(format!(
                "{} and {} do not hold the same images in the same order",
                a.dir.display(),
                b.map_or(a.dir.display().to_string(), |c| c.dir.display().to_string())
            )));
        }
    }
    let mb = b.unwrap_or(a);
    let mut rows: Vec<CkaRow> = Vec::new();
    for (x, ca) in fa.iter().zip(cols_a) {
        for (y, cb) in fb.iter().zip(cols_b) {
            let mirror = rows.iter().find(|r| b.is_none() && r.tap_a == *cb && r.tap_b == *ca).map(|r| r.cka);
            let cka = match mirror {
                Some(v) => v,
                None => linear_cka_host::<B>(&x.x, &y.x, device)?,
            };
            rows.push(CkaRow {
                model_a: a.manifest.model.clone(),
                weights_a: a.manifest.weights_ref(),
                tap_a: ca.clone(),
                model_b: mb.manifest.model.clone(),
                weights_b: mb.manifest.weights_ref(),
                tap_b: cb.clone(),
                n: x.x.rows as u32,
                cka,
            });
        }
    }
    Ok(rows)
}
