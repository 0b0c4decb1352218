//! Guards against silent failures: a GPU runtime that swallows a panic on its device thread, a
//! kernel that computes garbage, or data-parallel replicas that stopped averaging their
//! gradients can all leave a run going with exit code 0. Every `guard_every` steps (and at the
//! end of each epoch, before its checkpoint), each replica takes a [`Fingerprint`] of its model:
//! the sum of every float tensor, computed on the device and read back in one transfer. A
//! non-finite sum stops the run (naming the tensor); with several replicas the fingerprints of
//! the learned parameters must be equal bit for bit (they start equal and take the same
//! averaged steps), or the run stops naming the step and the replica. The BatchNorm running
//! statistics are left out of that comparison: each replica normalises its own batch.
//!
//! The replicas compare through a [`GuardBoard`], shared memory outside the collective they
//! check, so a broken all-reduce cannot hide its own failure.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use burn::prelude::*;
use exvit_zoo::{flat_tensors, TensorKind};
use thiserror::Error;

/// Why a guard stopped the run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GuardError {
    /// A tensor of the model holds NaN or infinity.
    #[error("iteration {iteration}: `{key}` of replica {replica} is not finite (its sum is {sum}); the run stops, the last checkpoint stands")]
    NonFinite {
        /// The iteration after which it was seen.
        iteration: u64,
        /// The replica.
        replica: usize,
        /// The tensor's timm key.
        key: String,
        /// Its sum.
        sum: f32,
    },
    /// Replicas whose parameters should be identical are not.
    #[error("iteration {iteration}: the parameters of replica {replica} differ from replica 0's (first `{key}`: sum {theirs} against {ours}); the replicas no longer average their gradients, the run stops, the last checkpoint stands")]
    Diverged {
        /// The iteration after which it was seen.
        iteration: u64,
        /// The replica that differs from replica 0.
        replica: usize,
        /// The first parameter that differs.
        key: String,
        /// Replica 0's sum of it.
        ours: f32,
        /// The other replica's.
        theirs: f32,
    },
    /// Another replica failed, or did not report in time.
    #[error("iteration {iteration}: replica {replica} {what}")]
    Replica {
        /// The iteration.
        iteration: u64,
        /// The replica.
        replica: usize,
        /// What happened to it.
        what: String,
    },
}

/// The sum of each float tensor of a model, keyed as in timm.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// The tensors' keys, in module order.
    pub keys: Vec<String>,
    /// Their sums.
    pub sums: Vec<f32>,
}

impl Fingerprint {
    /// Takes the fingerprint of `model` (one reduction per tensor on the device, one read back).
    pub fn of<B: Backend, M: Module<B>>(model: &M) -> Fingerprint {
        let flat = flat_tensors(model);
        let keys = flat.iter().map(|(k, _)| k.clone()).collect();
        // `sum_dim`, not `sum`: burn 0.21's cubecl backends compute a full `sum` in one kernel
        // whose cubes add into the output atomically, so its last bits change from call to call
        // (seen on wgpu: identical replicas "diverged"); a reduction along a dimension is the
        // same every time.
        let sums: Vec<Tensor<B, 1>> = flat
            .into_iter()
            .map(|(_, t)| {
                let n = t.dims()[0];
                t.reshape([1, n]).sum_dim(1).reshape([1]).cast(burn::tensor::FloatDType::F32)
            })
            .collect();
        let sums = if sums.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(sums, 0).into_data().convert::<f32>().to_vec().expect("f32 sums")
        };
        Fingerprint { keys, sums }
    }

    /// The first tensor whose sum is not finite.
    pub fn non_finite(&self) -> Option<(&str, f32)> {
        self.keys.iter().zip(&self.sums).find(|(_, s)| !s.is_finite()).map(|(k, &s)| (k.as_str(), s))
    }

    /// The first learned parameter whose sum differs (bit for bit) from `other`'s:
    /// `(key, ours, theirs)`.
    pub fn first_difference(&self, other: &Fingerprint) -> Option<(String, f32, f32)> {
        for ((k, &a), (k2, &b)) in self.keys.iter().zip(&self.sums).zip(other.keys.iter().zip(&other.sums)) {
            if k != k2 {
                return Some((format!("{k} / {k2}"), a, b));
            }
            if TensorKind::of(k) == TensorKind::Param && a.to_bits() != b.to_bits() {
                return Some((k.clone(), a, b));
            }
        }
        (self.keys.len() != other.keys.len()).then(|| ("(the number of tensors)".into(), f32::NAN, f32::NAN))
    }
}

/// Checks one replica's fingerprint on its own: every tensor finite.
pub fn check_finite(fp: &Fingerprint, iteration: u64, replica: usize) -> Result<(), GuardError> {
    match fp.non_finite() {
        Some((key, sum)) => Err(GuardError::NonFinite { iteration, replica, key: key.to_string(), sum }),
        None => Ok(()),
    }
}

#[derive(Default)]
struct BoardState {
    /// Fingerprints posted for each checked iteration, by rank.
    posts: BTreeMap<u64, Vec<Option<Fingerprint>>>,
    /// The first replica that failed, and why.
    failed: Option<(usize, String)>,
}

/// Where data-parallel replicas compare their fingerprints (shared memory, outside the
/// gradient collective).
pub struct GuardBoard {
    world: usize,
    state: Mutex<BoardState>,
    posted: Condvar,
    /// How long a replica waits for the others at a check.
    pub timeout: Duration,
}

impl GuardBoard {
    /// A board for `world` replicas.
    pub fn new(world: usize) -> GuardBoard {
        GuardBoard { world, state: Mutex::default(), posted: Condvar::new(), timeout: Duration::from_secs(600) }
    }

    /// Posts `rank`'s fingerprint after `iteration`, waits for every replica's, and checks them
    /// all: every replica reaches the same verdict, so they stop together at the same step.
    pub fn check(&self, iteration: u64, rank: usize, fp: Fingerprint) -> Result<(), GuardError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.posts.entry(iteration).or_insert_with(|| vec![None; self.world])[rank] = Some(fp);
        self.posted.notify_all();
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            if let Some((replica, what)) = &st.failed {
                return Err(GuardError::Replica { iteration, replica: *replica, what: what.clone() });
            }
            let posts = &st.posts[&iteration];
            if let Some(missing) = posts.iter().position(Option::is_none) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(GuardError::Replica {
                        iteration,
                        replica: missing,
                        what: format!("did not report within {:?}", self.timeout),
                    });
                }
                st = self.posted.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                continue;
            }
            let fps: Vec<&Fingerprint> = posts.iter().map(|p| p.as_ref().expect("all posted")).collect();
            let verdict = verdict(iteration, &fps);
            // Keep the board small: every replica is within one check of the others.
            while st.posts.len() > 4 {
                st.posts.pop_first();
            }
            return verdict;
        }
    }

    /// Records that `rank` failed (`what`), waking every replica waiting at a check.
    pub fn fail(&self, rank: usize, what: impl Into<String>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failed.get_or_insert((rank, what.into()));
        self.posted.notify_all();
    }
}

/// The verdict on one check's fingerprints, the same whichever replica computes it.
fn verdict(iteration: u64, fps: &[&Fingerprint]) -> Result<(), GuardError> {
    for (replica, fp) in fps.iter().enumerate() {
        check_finite(fp, iteration, replica)?;
    }
    for (replica, fp) in fps.iter().enumerate().skip(1) {
        if let Some((key, ours, theirs)) = fps[0].first_difference(fp) {
            return Err(GuardError::Diverged { iteration, replica, key, ours, theirs });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(sums: &[f32]) -> Fingerprint {
        Fingerprint {
            keys: vec!["stem.conv.weight".into(), "stem.bn.running_mean".into(), "head.fc.bias".into()],
            sums: sums.to_vec(),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(3, &[&fp(&[1.0, 2.0, 3.0]), &fp(&[1.0, 2.5, 3.0])]), Ok(()), "running stats may differ");
        let e = verdict(3, &[&fp(&[1.0, 2.0, 3.0]), &fp(&[1.0, 2.0, 3.000_001])]).unwrap_err();
        assert!(
            matches!(&e, GuardError::Diverged { iteration: 3, replica: 1, key, .. } if key == "head.fc.bias"),
            "{e}"
        );
        let e = verdict(4, &[&fp(&[1.0, 2.0, 3.0]), &fp(&[f32::NAN, 2.0, 3.0])]).unwrap_err();
        assert!(
            matches!(&e, GuardError::NonFinite { iteration: 4, replica: 1, key, .. } if key == "stem.conv.weight"),
            "{e}"
        );
        let e = verdict(5, &[&fp(&[1.0, f32::INFINITY, 3.0])]).unwrap_err();
        assert!(e.to_string().contains("`stem.bn.running_mean` of replica 0 is not finite"), "{e}");
    }

    #[test]
    fn the_board_waits_for_every_replica_and_wakes_on_a_failure() {
        let board = std::sync::Arc::new(GuardBoard::new(2));
        let b = board.clone();
        let t = std::thread::spawn(move || b.check(1, 1, fp(&[1.0, 2.0, 3.5])));
        std::thread::sleep(Duration::from_millis(20));
        let e = board.check(1, 0, fp(&[1.0, 2.0, 3.0])).unwrap_err();
        assert_eq!(t.join().unwrap().unwrap_err(), e, "both replicas reach the same verdict");
        assert!(e.to_string().contains("replica 1 differ from replica 0's (first `head.fc.bias`"), "{e}");

        let b = board.clone();
        let t = std::thread::spawn(move || b.check(2, 0, fp(&[1.0, 2.0, 3.0])));
        std::thread::sleep(Duration::from_millis(20));
        board.fail(1, "failed: out of memory");
        let e = t.join().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "iteration 2: replica 1 failed: out of memory");

        let mut lonely = GuardBoard::new(2);
        lonely.timeout = Duration::from_millis(30);
        let e = lonely.check(7, 0, fp(&[1.0, 2.0, 3.0])).unwrap_err();
        assert!(e.to_string().contains("replica 1 did not report"), "{e}");
    }
}
