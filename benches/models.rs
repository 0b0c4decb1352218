//! criterion benchmarks: forward (batch 1 and 16) and a training step (batch 16: forward,
//! backward, AdamW) at 256x256 on the CPU, for mobilevit_xxs, mobilevit_s and exmobilevit_928.
//!
//! `cargo bench -p exvit-tests --bench models` (add a filter, e.g. `-- mobilevit_xxs`). A train
//! step takes seconds, so samples are few. Never run in CI. Figures: docs/performance.md.

use std::time::Duration;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use burn_flex::{Flex, FlexDevice};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use exvit_train::{adamw_pytorch, smoothed_cross_entropy, train_step, Precision};
use exvit_zoo::create_model;

type AD = Autodiff<Flex>;
const MODELS: [&str; 3] = ["mobilevit_xxs", "mobilevit_s", "exmobilevit_928"];
const SIZE: usize = 256;

fn forward(c: &mut Criterion) {
    let dev = FlexDevice;
    let mut g = c.benchmark_group("forward");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for name in MODELS {
        let model = create_model::<Flex>(name, 1000, &dev).unwrap();
        for batch in [1, 16] {
            let x = Tensor::<Flex, 4>::random([batch, 3, SIZE, SIZE], Distribution::Default, &dev);
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(name, format!("b{batch}")), &x, |b, x| {
                b.iter(|| model.forward(x.clone()).into_data())
            });
        }
    }
    g.finish();
}

fn train(c: &mut Criterion) {
    let dev = FlexDevice;
    let mut g = c.benchmark_group("train_step");
    // Flat sampling: 10 samples of one step each, rather than criterion's 1 + 2 + … + 10.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    let batch = 16;
    for name in MODELS {
        let mut model = Some(create_model::<AD>(name, 1000, &dev).unwrap());
        let mut optim = adamw_pytorch().init();
        let loss_fn = smoothed_cross_entropy::<AD>(&dev);
        let x = Tensor::<AD, 4>::random([batch, 3, SIZE, SIZE], Distribution::Default, &dev);
        let labels: Vec<i64> = (0..batch as i64).map(|i| (7 * i + 3) % 1000).collect();
        let y = Tensor::<AD, 1, Int>::from_data(TensorData::new(labels, [batch]), &dev);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new(name, "b16"), |b| {
            b.iter(|| {
                let (m, loss) =
                    train_step(model.take().unwrap(), &mut optim, &loss_fn, x.clone(), y.clone(), 1e-3, Precision::F32);
                model = Some(m);
                loss
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward, train);

/// `criterion_main!`, with the allocator set up once first, as the exvit binary does at start-up
/// (docs/performance.md, step 2).
fn main() {
    exvit_layers::memory::retain_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
