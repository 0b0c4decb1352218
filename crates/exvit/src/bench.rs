//! `exvit bench`: time a forward pass or a training step, for the side-by-side comparison with
//! PyTorch (`benches/vs-pytorch`). One configuration per process, so the peak memory is its own.

use std::time::Instant;

use anyhow::{ensure, Result};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use clap::{Args, ValueEnum};
use exvit_layers::fast::on_pool;
use exvit_train::precision::{compute_input, compute_view};
use exvit_train::{adamw_pytorch, smoothed_cross_entropy, train_step, Precision};
use exvit_zoo::create_model;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// Eval-mode forward pass (BN folded into the convs).
    Forward,
    /// Forward, backward and an AdamW step, in train mode.
    Train,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Registry name or .toml variant.
    #[arg(long, default_value = "mobilevit_xxs")]
    model: String,
    /// What to time.
    #[arg(long, value_enum, default_value_t = Mode::Forward)]
    mode: Mode,
    /// Batch size.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Input side.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision: `f32`, or `bf16` (CUDA only; f32 master weights, norms and softmax in
    /// f32; docs/training.md).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

/// A memory figure of this process from /proc/self/status (`VmHWM:`, `VmRSS:`, …), in MiB
/// (NaN where there is no /proc).
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

fn time(warmup: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Median seconds of an eval-mode forward pass on backend `B` (reading the logits back
/// synchronises with the device).
fn bench_forward<B: Backend>(a: &BenchArgs, dev: &B::Device) -> Result<f64> {
    let shape = [a.batch, 3, a.size, a.size];
    let model = compute_view(&create_model::<B>(&a.model, 1000, dev)?, a.precision);
    let x = compute_input(Tensor::<B, 4>::random(shape, Distribution::Default, dev), a.precision);
    Ok(time(a.warmup, a.iters, || {
        let _: TensorData = on_pool(|| model.forward(x.clone())).into_data();
    }))
}

/// Median seconds of a training step on `Autodiff<B>`, synchronised with the device.
fn bench_train<B: crate::device::TrainBackend>(a: &BenchArgs, dev: &B::Device) -> Result<f64> {
    let shape = [a.batch, 3, a.size, a.size];
    let sync = || B::sync(dev).map_err(|e| anyhow::anyhow!("synchronising the device: {e:?}"));
    let mut model = Some(create_model::<Autodiff<B>>(&a.model, 1000, dev)?);
    let mut optim = adamw_pytorch().init();
    let loss_fn = smoothed_cross_entropy::<Autodiff<B>>(dev);
    let x = Tensor::<Autodiff<B>, 4>::random(shape, Distribution::Default, dev);
    let labels: Vec<i64> = (0..a.batch as i64).map(|i| (7 * i + 3) % 1000).collect();
    let y = Tensor::<Autodiff<B>, 1, Int>::from_data(TensorData::new(labels, [a.batch]), dev);
    let mut err = None;
    let t = time(a.warmup, a.iters, || {
        let (m, _) = train_step(model.take().unwrap(), &mut optim, &loss_fn, x.clone(), y.clone(), 1e-3, a.precision);
        model = Some(m);
        if let Err(e) = sync() {
            err = Some(e);
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(t),
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    ensure!(a.iters >= 1 && a.batch >= 1, "--iters and --batch must be at least 1");
    let device = crate::device::parse_device(&a.device)?;
    crate::device::check_precision(device, a.precision)?;
    let secs = match a.mode {
        Mode::Forward => crate::with_backend!(device, |B, dev| bench_forward::<B>(&a, &dev))?,
        Mode::Train => crate::with_autodiff_backend!(device, |B, dev| bench_train::<B>(&a, &dev))?,
    };
    let json = serde_json::json!({
        "side": "exvit",
        "device": a.device,
        "model": a.model,
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "precision": a.precision.to_string(),
        "batch": a.batch,
        "size": a.size,
        "threads": rayon::current_num_threads(),
        "seconds_per_iter": secs,
        "img_per_s": a.batch as f64 / secs,
        "peak_rss_mib": peak_rss_mib(),
    });
    println!("{json}");
    Ok(())
}
