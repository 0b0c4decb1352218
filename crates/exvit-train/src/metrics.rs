//! Top-k accuracy.

use burn::prelude::*;

/// How many rows of `logits` (`[n, classes]`) have their label among the 1 and the 5 highest
/// scores (among all of them when there are fewer than 5 classes). Ties count against the
/// label: a class scoring equal to the label and listed before it ranks above it, as
/// `torch.topk` does on the CPU.
pub fn topk_correct<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> (usize, usize) {
    let [n, c] = logits.dims();
    assert_eq!(n, labels.len(), "topk_correct: {n} rows and {} labels", labels.len());
    let v: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
    let (mut top1, mut top5) = (0, 0);
    for (row, &label) in v.chunks_exact(c).zip(labels) {
        let s = row[label];
        if s.is_nan() {
            continue; // a NaN score is never correct
        }
        // Rank of the label: classes strictly above it, plus equal ones listed before it.
        let rank = row.iter().enumerate().filter(|&(j, &x)| x > s || (x == s && j < label)).count();
        top1 += (rank < 1) as usize;
        top5 += (rank < 5) as usize;
    }
    (top1, top5)
}
