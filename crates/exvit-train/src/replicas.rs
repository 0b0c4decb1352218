//! Data-parallel replicas on the threads of one process, for any backend (`exvit train
//! --replicas N` on the CPU or one wgpu device), and the orchestration shared with the NCCL path
//! of [`crate::ddp`].
//!
//! Each replica is one thread running [`train_replica`] on its shard of every epoch (padded like
//! PyTorch's `DistributedSampler`, so every replica takes the same number of steps). All start
//! from one record (so they share parameter ids and values). After each backward, the
//! [`ThreadAllReduce`] replaces every replica's gradients and loss by their mean over the
//! replicas, so the optimiser steps are identical and the replicas stay identical; rank 0 alone
//! keeps the EMA, evaluates and writes the run's files. The stop decision (Ctrl-C,
//! `max_iterations`) is taken once per iteration for all. The guards ([`crate::guard`]) compare
//! the replicas' parameters outside the all-reduce, so a replica that stopped averaging is
//! caught at the next check.
//!
//! Why not burn-collective (burn's `collective` feature): its local all-reduce sums in the order
//! of a `HashMap` (so beyond two replicas the result changes from run to run in the last bits),
//! and it brings a websocket stack (axum, tokio-tungstenite) into every build. This one sums in
//! rank order with plain tensor ops on the replicas' devices.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use exvit_data::sampler::Replica;
use exvit_zoo::MobileVit;

use crate::adamw::GradBuffer;
use crate::guard::GuardBoard;
use crate::run::{initial_model, train_replica, Progress, ReplicaRole, RunConfig, RunError, RunSummary};
use crate::trainer::GradReduce;

/// Deliberate faults, for the tests of the guards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// This replica takes part in every all-reduce but keeps its own gradients (the silent
    /// failure of a collective that does nothing).
    pub keep_own_gradients: Option<usize>,
    /// `(replica, round)`: this replica's all-reduce fails at this round (a replica that dies).
    pub fail_at: Option<(usize, u64)>,
}

struct Round<B: Backend> {
    inputs: Vec<Option<Tensor<B, 1>>>,
    output: Option<Tensor<B, 1>>,
    taken: usize,
}

struct ReduceState<B: Backend> {
    rounds: BTreeMap<u64, Round<B>>,
    failed: Option<String>,
}

/// A mean all-reduce between the threads of one process: each replica hands in one flat
/// tensor per round; the last to arrive sums them in rank order (the same sum every run) and
/// divides by the number of replicas; each replica gets the result on its own device.
pub struct ThreadAllReduce<B: Backend> {
    world: usize,
    state: Mutex<ReduceState<B>>,
    ready: Condvar,
    /// How long a replica waits for the others in one round.
    pub timeout: Duration,
}

impl<B: Backend> ThreadAllReduce<B> {
    /// An all-reduce between `world` replicas.
    pub fn new(world: usize) -> Self {
        ThreadAllReduce {
            world,
            state: Mutex::new(ReduceState { rounds: BTreeMap::new(), failed: None }),
            ready: Condvar::new(),
            timeout: Duration::from_secs(600),
        }
    }

    /// `rank`'s part of round `round`: returns the mean over the replicas of their tensors.
    pub fn all_reduce(&self, round: u64, rank: usize, tensor: Tensor<B, 1>) -> Result<Tensor<B, 1>, String> {
        let device = tensor.device();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let world = self.world;
        let r = st.rounds.entry(round).or_insert_with(|| Round { inputs: vec![None; world], output: None, taken: 0 });
        if r.inputs[rank].is_some() {
            return Err(format!("replica {rank} entered all-reduce round {round} twice"));
        }
        r.inputs[rank] = Some(tensor);
        if r.inputs.iter().all(Option::is_some) {
            let mut inputs = r.inputs.iter_mut().map(|t| t.take().expect("all in"));
            let first = inputs.next().expect("world >= 1");
            let at = first.device();
            let sum = inputs.fold(first, |acc, t| acc + t.to_device(&at));
            r.output = Some(sum.div_scalar(world as f64));
            self.ready.notify_all();
        }
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            if let Some(why) = &st.failed {
                return Err(why.clone());
            }
            let r = st.rounds.get_mut(&round).expect("the round stays until every replica took it");
            if let Some(out) = &r.output {
                let out = out.clone().to_device(&device);
                r.taken += 1;
                if r.taken == world {
                    st.rounds.remove(&round);
                }
                return Ok(out);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (0..world).filter(|&i| r.inputs[i].is_none()).collect();
                return Err(format!(
                    "all-reduce round {round}: replica(s) {missing:?} did not arrive within {:?}",
                    self.timeout
                ));
            }
            st = self.ready.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Ends every waiting and later round with `why` (a replica failed).
    pub fn fail(&self, why: impl Into<String>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failed.get_or_insert(why.into());
        self.ready.notify_all();
    }
}

/// The trainer's gradient hook for replica `rank`: all its gradients (in key order, the same on
/// every replica) and its loss in one flat tensor, one all-reduce per step, split back.
pub fn reduce_hook<B: Backend>(reducer: Arc<ThreadAllReduce<B>>, rank: usize, faults: Faults) -> GradReduce<B> {
    let mut round = 0u64;
    let keep_own = faults.keep_own_gradients == Some(rank);
    Box::new(move |grads: GradBuffer<B>, loss: f64| {
        if faults.fail_at == Some((rank, round)) {
            return Err(format!("replica {rank}: injected failure at all-reduce round {round}"));
        }
        let Some(device) = grads.values().next().map(Tensor::device) else {
            return Ok((grads, loss));
        };
        let sizes: Vec<(String, usize)> = grads.iter().map(|(k, g)| (k.clone(), g.dims()[0])).collect();
        let mut parts: Vec<Tensor<B, 1>> = grads.values().cloned().collect();
        parts.push(Tensor::from_data(TensorData::new(vec![loss as f32], [1]), &device));
        let mean = reducer.all_reduce(round, rank, Tensor::cat(parts, 0))?;
        round += 1;
        if keep_own {
            return Ok((grads, loss));
        }
        let mut out = GradBuffer::new();
        let mut at = 0;
        for (key, n) in sizes {
            out.insert(key, mean.clone().narrow(0, at, n));
            at += n;
        }
        let loss = mean.narrow(0, at, 1).into_scalar().elem::<f64>();
        Ok((out, loss))
    })
}

/// How the replicas of [`run_replicas`] average their gradients.
pub enum Averaging<A: AutodiffBackend> {
    /// Inside `backward` (burn's distributed autodiff, NCCL): parameters re-marked after every
    /// optimiser step by this function.
    InBackward(fn(MobileVit<A>) -> MobileVit<A>),
    /// Between backward and the optimiser step, through a [`ThreadAllReduce`].
    Threads(Arc<ThreadAllReduce<A::InnerBackend>>, Faults),
}

enum Message {
    Progress(Progress),
    Done(usize, Result<RunSummary, RunError>),
}

/// Trains the run `cfg` with one replica per entry of `devices` (threads of this process;
/// `cfg.batch` is the batch of one replica). Returns rank 0's summary, or the first error: when
/// a replica fails, the others are stopped at their next all-reduce or guard check. With
/// [`Averaging::InBackward`] the others may instead wait in an NCCL all-reduce that never
/// completes: the caller should end the process after reporting the error (the CLI does).
pub fn run_replicas<A>(
    cfg: &RunConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    devices: &[A::Device],
    averaging: Averaging<A>,
    mut progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError>
where
    A: AutodiffBackend + 'static,
{
    let world = devices.len();
    if world == 0 {
        return Err(RunError::Replicas("data parallel needs at least one replica".into()));
    }
    let (train, val) = cfg.validate()?;
    let _lock = crate::run::lock_run_dir(cfg)?;
    let classes = train.classes.len();
    let mut cfg = cfg.clone();
    if cfg.workers.is_none() {
        // Each replica runs its own loader: share the cores between them.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        cfg.workers = Some((cores / world).max(1));
    }
    let model_cfg = cfg.model_config(classes)?;
    let initial = initial_model::<A>(&cfg, classes, &devices[0])?;
    let board = Arc::new(GuardBoard::new(world));
    // The stop decision for an iteration: the first replica to ask reads the flag, the others
    // get its answer.
    let decisions: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let reducer = match &averaging {
        Averaging::Threads(r, _) => Some(r.clone()),
        Averaging::InBackward(_) => None,
    };
    for (rank, device) in devices.iter().cloned().enumerate() {
        let (cfg, model_cfg, tx) = (cfg.clone(), model_cfg.clone(), tx.clone());
        let data = Some((train.clone(), val.clone()));
        // Loaded into a fresh model on the replica's device: its own tensors and running state.
        let record = initial.clone().into_record();
        let (stop, decisions, board) = (stop.clone(), decisions.clone(), board.clone());
        let (after_update, reduce) = match &averaging {
            Averaging::InBackward(mark) => (Some(*mark), None),
            Averaging::Threads(r, faults) => (None, Some(reduce_hook(r.clone(), rank, *faults))),
        };
        std::thread::Builder::new()
            .name(format!("exvit-replica-{rank}"))
            .spawn(move || {
                let decide = move |iteration: u64| {
                    let mut d = decisions.lock().unwrap_or_else(|e| e.into_inner());
                    let answer = *d.entry(iteration).or_insert_with(|| stop.load(Ordering::SeqCst));
                    // Keep the map small: every replica is within a step of the others.
                    while d.len() > 64 {
                        d.pop_first();
                    }
                    answer
                };
                // `fork`: new autodiff leaves (same parameter ids). Replicas whose parameters share
                // autodiff nodes share one burn graph, and burn 0.21's graph locks then deadlock
                // between one replica's backward and another's forward (seen here).
                let model: MobileVit<A> = model_cfg.init(&device).load_record(record).fork(&device);
                let role = ReplicaRole {
                    replica: Replica { rank, world },
                    initial: Some(model),
                    after_update,
                    reduce,
                    guard: Some(board),
                    data,
                };
                let progress_tx = tx.clone();
                let result = train_replica::<A>(&cfg, resume, &decide, &device, role, |p| {
                    if rank == 0 {
                        let _ = progress_tx.send(Message::Progress(p));
                    }
                });
                let _ = tx.send(Message::Done(rank, result));
            })
            .map_err(|e| RunError::Replicas(format!("starting replica {rank}: {e}")))?;
    }
    drop(tx);
    let mut summary = None;
    let mut first_error: Option<(usize, RunError)> = None;
    let mut done = 0;
    for message in rx {
        match message {
            Message::Progress(p) => progress(p),
            Message::Done(rank, result) => {
                done += 1;
                match result {
                    Ok(s) if rank == 0 => summary = Some(s),
                    Ok(_) => {}
                    Err(e) => {
                        // Wake the others: they stop at their next all-reduce or check.
                        let why = format!("failed: {e}");
                        board.fail(rank, why.clone());
                        if let Some(r) = &reducer {
                            r.fail(format!("replica {rank} {why}"));
                        }
                        if first_error.is_none() {
                            first_error = Some((rank, e));
                        }
                        if reducer.is_none() {
                            // NCCL: the others may never return.
                            break;
                        }
                    }
                }
            }
        }
        if done == world {
            break;
        }
    }
    if let Some((rank, e)) = first_error {
        tracing::error!(replica = rank, "{e}");
        return Err(e);
    }
    summary.ok_or_else(|| RunError::Replicas("replica 0 ended without a result".into()))
}

/// [`run_replicas`] with `world` replicas on one `device` of any backend, averaging through a
/// [`ThreadAllReduce`] (`exvit train --replicas N`).
pub fn train_replicas<A>(
    cfg: &RunConfig,
    resume: bool,
    stop: Arc<AtomicBool>,
    world: usize,
    device: &A::Device,
    faults: Faults,
    progress: impl FnMut(Progress),
) -> Result<RunSummary, RunError>
where
    A: AutodiffBackend + 'static,
{
    let devices = vec![device.clone(); world];
    let reducer = Arc::new(ThreadAllReduce::<A::InnerBackend>::new(world));
    run_replicas::<A>(cfg, resume, stop, &devices, Averaging::Threads(reducer, faults), progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    #[test]
    fn the_thread_all_reduce_averages_in_rank_order_every_round() {
        let r = Arc::new(ThreadAllReduce::<Flex>::new(3));
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..4u64)
                        .map(|round| {
                            let v = (rank as f32 + 1.0) * (round as f32 + 1.0);
                            let t = Tensor::<Flex, 1>::from_data(TensorData::new(vec![v, -v], [2]), &FlexDevice);
                            r.all_reduce(round, rank, t).unwrap().into_data().to_vec::<f32>().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            for (round, v) in got.iter().enumerate() {
                let want = 2.0 * (round as f32 + 1.0);
                assert_eq!(v, &vec![want, -want], "round {round}");
            }
        }
        assert!(r.state.lock().unwrap().rounds.is_empty(), "finished rounds are dropped");
        r.fail("replica 2 failed: boom");
        let t = Tensor::<Flex, 1>::zeros([2], &FlexDevice);
        assert_eq!(r.all_reduce(9, 0, t).unwrap_err(), "replica 2 failed: boom");
    }
}
