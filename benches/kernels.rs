//! criterion benchmarks of the fused element-wise kernels against the memory system's own speed:
//! SiLU (in place, and into a new buffer) and the attention (softmax included) beside a plain
//! copy of the same bytes, on one thread and on rayon's default pool. A kernel near the copy is
//! bound by memory; one far above it by arithmetic (docs/performance.md, "Why the speed moves
//! with the machine").
//!
//! Also a conv's cost per pixel at sizes around a power of two (`conv_sizes`).
//!
//! `cargo bench -p exvit-tests --bench kernels` (add a filter, e.g. `-- silu`). Never run in CI.

use std::time::Duration;

use burn::prelude::*;
use burn::tensor::{Distribution, TensorPrimitive};
use burn_flex::{Flex, FlexDevice, FlexTensor};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use exvit_layers::fast::{attention, attention_generic, conv1x1, conv2d_dense, silu_forward};

/// Activations of mobilevit_xxs at 256x256, batch 1: the stem's output (16x128x128, 1 MiB,
/// about L2) and the first stage's expanded maps of batch 8 (64x64x64x8, 8 MiB, past L2).
const SIZES: [usize; 2] = [16 * 128 * 128, 8 * 64 * 64 * 64];

fn flex(n: usize) -> FlexTensor {
    let t = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 3.0), &FlexDevice);
    match t.into_primitive() {
        TensorPrimitive::Float(p) => p,
        TensorPrimitive::QFloat(_) => unreachable!("a float tensor"),
    }
}

/// A rayon pool of `threads` threads (each benchmark runs inside `install`).
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool")
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        let p = pool(threads);
        for n in SIZES {
            g.throughput(Throughput::Elements(n as u64));
            let src = vec![1.5f32; n];
            let mut dst = vec![0f32; n];
            g.bench_function(BenchmarkId::new(format!("copy/t{threads}"), n), |b| {
                b.iter(|| p.install(|| dst.copy_from_slice(&src)))
            });
            let x = flex(n);
            g.bench_function(BenchmarkId::new(format!("silu_new_buffer/t{threads}"), n), |b| {
                b.iter(|| p.install(|| silu_forward(x.clone(), false)))
            });
            g.bench_function(BenchmarkId::new(format!("silu_in_place/t{threads}"), n), |b| {
                b.iter_batched(|| x.to_contiguous(), |t| p.install(|| silu_forward(t, true)), BatchSize::LargeInput)
            });
        }
    }
    g.finish();
}

/// One MobileViT block's attention at 256x256, batch 1, 2x2 patches: mobilevit_xxs's stages.2
/// (4 sequences of 256 tokens, width 64, 4 heads) and mobilevit_s's (width 144).
fn attention_kernel(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for threads in [1, 2] {
        let p = pool(threads);
        for width in [64, 144] {
            let qkv = Tensor::<Flex, 3>::random([4, 256, 3 * width], Distribution::Normal(0.0, 1.0), &FlexDevice);
            g.throughput(Throughput::Elements(4 * 256 * 256));
            g.bench_function(BenchmarkId::new(format!("fused/t{threads}"), width), |b| {
                b.iter(|| p.install(|| attention(qkv.clone(), 4).into_data()))
            });
            g.bench_function(BenchmarkId::new(format!("generic/t{threads}"), width), |b| {
                b.iter(|| p.install(|| attention_generic(qkv.clone(), 4, |a| a).into_data()))
            });
        }
    }
    g.finish();
}

/// A conv's forward and backward (both gradients) per input pixel at three sizes around a power
/// of two, one thread: at 128x128 the rows of an activation are 64 KiB apart and share cache
/// sets, which cost the gemm's packing 1.3–1.7x per pixel before `fast::gemm::padded_stride`
/// (docs/performance.md, step 9). mobilevit_xxs's shapes at 256: the first stage's 1x1 convs
/// (16 → 32, 32 → 16), and a 3x3 conv of 16 channels.
fn conv_sizes(c: &mut Criterion) {
    type Ad = burn::backend::Autodiff<Flex>;
    let mut g = c.benchmark_group("conv_sizes");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let p = pool(1);
    for side in [120, 128, 136] {
        g.throughput(Throughput::Elements((2 * side * side) as u64));
        for (name, i, o, k) in
            [("pointwise_16_32", 16, 32, 1), ("pointwise_32_16", 32, 16, 1), ("dense3x3_16_16", 16, 16, 3)]
        {
            let x = Tensor::<Ad, 4>::random([2, i, side, side], Distribution::Normal(0.0, 1.0), &FlexDevice);
            let w = Tensor::<Ad, 4>::random([o, i, k, k], Distribution::Normal(0.0, 0.3), &FlexDevice);
            g.bench_function(BenchmarkId::new(name, side), |b| {
                b.iter(|| {
                    p.install(|| {
                        let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
                        let y = if k == 1 {
                            conv1x1(x.clone(), w.clone(), None)
                        } else {
                            conv2d_dense(x.clone(), w.clone(), None, 1, 1)
                        };
                        let grads = y.sum().backward();
                        (x.grad(&grads), w.grad(&grads))
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, elementwise, attention_kernel, conv_sizes);

/// `criterion_main!`, with the allocator set up once first, as the exvit binary does at start-up.
fn main() {
    exvit_layers::memory::retain_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
