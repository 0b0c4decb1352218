//! Training-mode parity with PyTorch: one step in train mode (BN on batch statistics, no
//! dropout or drop-path), cross entropy with label smoothing 0.1. The loss, the logits, every
//! parameter's gradient (within 1e-3 relative L2) and every BN's running statistics after the
//! step (within 1e-5) must agree with timm (fixtures: tools/parity/make_fixtures.py, `make_train`).
//!
//! The fixture stores each gradient's L2 norm and its projections on 16 seeded random vectors
//! (plus its first values), so the relative L2 error is estimated from
//! `‖P(g − g_ref)‖ / ‖P g_ref‖`, a Johnson–Lindenstrauss sketch of `‖g − g_ref‖ / ‖g_ref‖`.

use burn::backend::Autodiff;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexDevice};
use exvit_tests::{repo_root, Fixture};
use exvit_zoo::refinit::{reference_init, reference_input, uniform_stream};
use exvit_zoo::{create_model, named_grads, named_tensors};

type AD = Autodiff<Flex>;
const DEV: FlexDevice = FlexDevice;

fn check(file: &str) {
    let fx = Fixture::read(&repo_root().join("tests/fixtures/parity").join(file));
    let name = fx.meta("model");
    let size: usize = fx.meta("size").parse().unwrap();
    let batch: usize = fx.meta("batch").parse().unwrap();
    let seed: u64 = fx.meta("seed").parse().unwrap();
    let nproj: usize = fx.meta("nproj").parse().unwrap();
    let model = reference_init(create_model::<AD>(name, 1000, &DEV).unwrap(), seed);
    let x = Tensor::<AD, 4>::from_data(reference_input(seed, [batch, 3, size, size]), &DEV);
    let labels: Vec<i64> = fx.get("labels").values.iter().map(|&v| v as i64).collect();
    let y = Tensor::<AD, 1, Int>::from_data(TensorData::new(labels, [batch]), &DEV);

    let logits = model.forward(x);
    let loss = CrossEntropyLossConfig::new().with_smoothing(Some(0.1)).init(&DEV).forward(logits.clone(), y);
    let loss_v: f32 = loss.clone().into_scalar();
    let want_loss = fx.get("loss").values[0];
    assert!((loss_v as f64 - want_loss).abs() < 1e-5, "{file}: loss {loss_v} vs PyTorch {want_loss}");
    let got: Vec<f32> = logits.into_data().to_vec().unwrap();
    let worst = got.iter().zip(&fx.get("logits").values).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "{file}: train-mode logits differ by {worst:e}");

    let grads = loss.backward();
    let named = named_grads(&model, &grads);
    let keys: Vec<String> = serde_json::from_str(fx.meta("params")).unwrap();
    assert_eq!(named.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), keys, "{file}: parameter order");
    let mut worst_rel = (0.0f64, String::new());
    let scale = keys.iter().map(|k| fx.get(&format!("g.{k}")).values[0]).fold(0.0, f64::max);
    let mut zero = 0;
    for (key, g) in &named {
        let g: Vec<f64> = g
            .as_ref()
            .unwrap_or_else(|| panic!("{file}: no gradient for `{key}`"))
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let want = &fx.get(&format!("g.{key}")).values;
        let (ref_norm, ref_proj) = (want[0], &want[1..1 + nproj]);
        let mut diff2 = 0.0;
        let mut ref2 = 0.0;
        for (j, &rp) in ref_proj.iter().enumerate() {
            let r = uniform_stream(0, &format!("proj:{key}:{j}"), g.len());
            let p: f64 = r.iter().zip(&g).map(|(r, g)| (2.0 * r - 1.0) * g).sum();
            diff2 += (p - rp).powi(2);
            ref2 += rp * rp;
        }
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        if ref_norm < 1e-6 * scale {
            // Analytically zero: a BN or LN bias whose per-channel shift reaches a train-mode
            // BN through linear maps only (the BN removes it). Both sides hold rounding noise,
            // ~1e-7 against a largest gradient norm of ~6; the next smallest is ~3e-3.
            assert!(norm < 1e-6 * scale, "{file}: `{key}` should be ~0, has norm {norm:e} (scale {scale:e})");
            zero += 1;
            continue;
        }
        let rel = (diff2 / ref2).sqrt();
        let rel_norm = (norm - ref_norm).abs() / ref_norm;
        assert!(
            rel <= 1e-3 && rel_norm <= 1e-3,
            "{file}: gradient of `{key}` differs: sketch rel {rel:.2e}, norm rel {rel_norm:.2e}"
        );
        if rel > worst_rel.0 {
            worst_rel = (rel, key.clone());
        }
    }

    // Running statistics after the step.
    let mut worst_bn = 0.0f64;
    for t in named_tensors(&model) {
        if t.key.ends_with("running_mean") || t.key.ends_with("running_var") {
            let got: Vec<f32> = t.data.to_vec().unwrap();
            let want = &fx.get(&format!("b.{}", t.key)).values;
            for (&a, &b) in got.iter().zip(want) {
                worst_bn = worst_bn.max((a as f64 - b).abs());
            }
        } else if t.key.ends_with("num_batches_tracked") {
            assert_eq!(t.data.to_vec::<f32>().unwrap(), vec![1.0], "{}", t.key);
        }
    }
    assert!(worst_bn <= 1e-5, "{file}: running stats differ by {worst_bn:e}");
    eprintln!(
        "{file}: loss {loss_v:.6}, {} gradients, worst rel {:.2e} (`{}`), {zero} analytically zero, running stats {worst_bn:.1e}",
        named.len(),
        worst_rel.0,
        worst_rel.1
    );
}

#[test]
fn mobilevit_xxs_train_step_matches_pytorch() {
    check("train_mobilevit_xxs_128.safetensors");
}

#[test]
fn exmobilevit_640_train_step_matches_pytorch() {
    // At 96x96, stages.4 runs at 3x3: the odd-size resize is differentiated too.
    check("train_exmobilevit_640_96.safetensors");
}
