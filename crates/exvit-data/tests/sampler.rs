//! Sampling: seeded shuffles, data-parallel shards with documented padding, and ml-cvnets'
//! multi-scale variable-batch sampler with both batch-size rules.

use std::collections::HashMap;

use exvit_data::sampler::{epoch_order, shard, Fixed, MultiScale, Replica, ScaleRule};

#[test]
fn shuffle_is_a_seeded_permutation_that_changes_with_the_epoch() {
    let a = epoch_order(1000, 7, 3, true);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(1000, 7, 3, true), "same seed and epoch, same order");
    assert_ne!(a, epoch_order(1000, 7, 4, true), "a new epoch reshuffles");
    assert_ne!(a, epoch_order(1000, 8, 3, true), "a new seed reshuffles");
    assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    // The order does not depend on the thread that computes it.
    let from_threads: Vec<Vec<usize>> = std::thread::scope(|s| {
        (0..4)
            .map(|_| s.spawn(|| epoch_order(1000, 7, 3, true)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    assert!(from_threads.iter().all(|o| *o == a));
}

/// Every (n, world, batch) combination: across ranks each sample appears at least once, ranks
/// run the same number of batches, and the repeats per rank are as docs say.
#[test]
fn shards_cover_every_sample_with_bounded_padding() {
    for n in [1usize, 7, 10, 64, 101, 1000] {
        for world in [1usize, 2, 3, 8] {
            for batch in [1usize, 4, 16] {
                if n < world {
                    continue;
                }
                let mut seen: HashMap<usize, usize> = HashMap::new();
                let mut lens = Vec::new();
                for rank in 0..world {
                    let batches = Fixed::train(batch, 32).batches(n, 5, 0, Replica { rank, world });
                    assert!(
                        batches.iter().all(|b| b.indices.len() == batch),
                        "n {n} W {world} B {batch}: full batches"
                    );
                    let list: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
                    let own = shard(&epoch_order(n, 5, 0, true), rank, world).len();
                    let repeats = list.len() - own;
                    let bound = if own == n.div_ceil(world) { batch - 1 } else { batch };
                    assert!(repeats <= bound, "n {n} W {world} B {batch} rank {rank}: {repeats} repeats > {bound}");
                    for i in list {
                        *seen.entry(i).or_default() += 1;
                    }
                    lens.push(batches.len());
                }
                assert_eq!(seen.len(), n, "n {n} W {world} B {batch}: every sample appears");
                assert!(lens.windows(2).all(|w| w[0] == w[1]), "same number of batches on every rank: {lens:?}");
            }
        }
    }
    // Without padding (evaluation), the shards are disjoint and exact.
    let all: usize = (0..3)
        .map(|r| {
            Fixed::eval(4, 32)
                .batches(10, 0, 0, Replica { rank: r, world: 3 })
                .iter()
                .map(|b| b.indices.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(all, 10);
}

#[test]
fn cvnets_batch_sizes_follow_both_rules() {
    // v0.1 at base 128 on 1 GPU: max(128, int(round(128·256²/s², 2))), then even.
    // 160: 327.68 -> 327 -> 326; 192: 227.55 -> 227 -> 226; 256: 128; 288: 101.1 -> 128; 320: 128.
    let v01 = MultiScale::cvnets(128, ScaleRule::V01, 1);
    let got: Vec<usize> = v01.sizes.iter().map(|&s| v01.batch_for(s)).collect();
    assert_eq!(got, vec![326, 226, 128, 128, 128]);
    // On 8 GPUs the sizes are multiples of 8 (327 -> 328, 227 -> 224).
    let v01_8 = MultiScale::cvnets(128, ScaleRule::V01, 8);
    let got: Vec<usize> = v01_8.sizes.iter().map(|&s| v01_8.batch_for(s)).collect();
    assert_eq!(got, vec![328, 224, 128, 128, 128]);
    // v0.2: pixels per batch constant: 327, 227, 128, 101, 81.
    let v02 = MultiScale::cvnets(128, ScaleRule::V02, 1);
    let got: Vec<usize> = v02.sizes.iter().map(|&s| v02.batch_for(s)).collect();
    assert_eq!(got, vec![327, 227, 128, 101, 81]);
    for (s, b) in v02.sizes.iter().zip(&got) {
        let px = (s * s * b) as f64 / (256.0 * 256.0 * 128.0);
        assert!((px - 1.0).abs() <= 1.0 / *b as f64, "v0.2 at {s}: {px} (truncation costs at most one sample)");
    }
}

#[test]
fn multi_scale_steps_cover_the_epoch_with_uniform_sizes() {
    let ms = MultiScale::cvnets(4, ScaleRule::V02, 1);
    let n = 10_000;
    let steps = ms.steps(n, 3, 0, Replica::default(), 1);
    let mut seen = vec![0usize; n];
    let mut by_size: HashMap<usize, usize> = HashMap::new();
    for st in &steps {
        for b in &st.micro {
            assert_eq!(b.indices.len(), ms.batch_for(b.size));
            for &i in &b.indices {
                seen[i] += 1;
            }
        }
        *by_size.entry(st.micro[0].size).or_default() += 1;
    }
    assert!(seen.iter().all(|&c| c >= 1), "every sample once");
    let repeats: usize = seen.iter().map(|c| c - 1).sum();
    assert!(repeats < ms.batch_for(160), "only the last batch wraps around: {repeats}");
    // Sizes uniform: chi-square over 5 bins, p = 0.001 critical value 18.5.
    let total = steps.len() as f64;
    let chi2: f64 = ms.sizes.iter().map(|s| (by_size[s] as f64 - total / 5.0).powi(2) / (total / 5.0)).sum();
    assert!(chi2 < 18.5, "sizes not uniform: {by_size:?}");
    // Deterministic.
    assert_eq!(steps, ms.steps(n, 3, 0, Replica::default(), 1));
}

#[test]
fn accumulation_keeps_one_size_per_step_and_ranks_agree() {
    let ms = MultiScale::cvnets(4, ScaleRule::V01, 2);
    let r0 = ms.steps(1001, 9, 2, Replica { rank: 0, world: 2 }, 3);
    let r1 = ms.steps(1001, 9, 2, Replica { rank: 1, world: 2 }, 3);
    assert_eq!(r0.len(), r1.len(), "ranks run the same number of steps");
    for (a, b) in r0.iter().zip(&r1) {
        assert_eq!(a.micro.len(), 3);
        assert!(a.micro.iter().all(|m| m.size == a.micro[0].size), "one resolution per step");
        assert_eq!(a.micro[0].size, b.micro[0].size, "ranks draw the same resolution");
        assert!(a.micro.iter().all(|m| m.indices.len() % 2 == 0), "v0.1 sizes divisible by 2 GPUs");
    }
    let mut all: Vec<usize> =
        r0.iter().chain(&r1).flat_map(|s| s.micro.iter().flat_map(|m| m.indices.clone())).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1001);
}
