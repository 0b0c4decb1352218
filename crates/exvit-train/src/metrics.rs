//! Top-k accuracy.

use burn::prelude::*;

/// How many rows of `logits` (`[n, classes]`) have their label among the 1 and the 5 highest
/// scores (among all of them when there are fewer than 5 classes). Ties count against the
/// label: a class scoring equal to the label and listed before it ranks above it, as
/// `torch.topk` does on the CPU.
pub fn topk_correct<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> (usize, usize) {
    let ranks = label_ranks(logits, labels);
    let top1 = ranks.iter().filter(|&&r| r < 1).count();
    let top5 = ranks.iter().filter(|&&r| r < 5).count();
    (top1, top5)
}

/// The rank of each row's label among its scores (0 = the top-1 prediction), with the tie rule
/// of [`topk_correct`]; `u32::MAX` where the label's score is NaN (never correct). Kept per
/// image, these ranks let two models be compared image by image (a paired bootstrap).
pub fn label_ranks<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> Vec<u32> {
    let [n, c] = logits.dims();
    assert_eq!(n, labels.len(), "label_ranks: {n} rows and {} labels", labels.len());
    let v: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
    v.chunks_exact(c)
        .zip(labels)
        .map(|(row, &label)| {
            let s = row[label];
            if s.is_nan() {
                return u32::MAX;
            }
            // Classes strictly above the label, plus equal ones listed before it.
            row.iter().enumerate().filter(|&(j, &x)| x > s || (x == s && j < label)).count() as u32
        })
        .collect()
}
