//! The parity checks against timm / PyTorch fixtures, generic over the backend: `tests/parity.rs`
//! and `tests/train_parity.rs` run them on burn-flex, `crates/exvit/tests/wgpu.rs` on Vulkan.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use exvit_zoo::refinit::{reference_init, reference_input, uniform_stream};
use exvit_zoo::{create_model, named_grads, named_tensors};

use crate::{repo_root, Fixture};

/// The registry name, or for `tiny` the TOML variant that describes it.
pub fn model_arg(name: &str) -> String {
    if name == "tiny" {
        repo_root().join("tests/fixtures/parity/tiny.toml").to_string_lossy().into_owned()
    } else {
        name.to_string()
    }
}

/// Eval-mode parity of one fixture on backend `B`: the reference init (keys, order, values)
/// and every named output within `tol` of timm. Returns the largest difference.
pub fn check_eval<B: Backend>(file: &str, dev: &B::Device, tol: f64) -> f64 {
    let fx = Fixture::read(&repo_root().join("tests/fixtures/parity").join(file));
    let name = fx.meta("model");
    let classes = fx.get("o.logits.shape").values[1] as usize;
    let size: usize = fx.meta("size").parse().unwrap();
    let seed: u64 = fx.meta("seed").parse().unwrap();
    let batch: usize = fx.meta("batch").parse().unwrap();
    let model = reference_init(create_model::<B>(&model_arg(name), classes, dev).unwrap(), seed);

    // 1. The reference init: same keys, in state_dict order, and the same values.
    let keys: Vec<String> = serde_json::from_str(fx.meta("keys")).unwrap();
    let named = named_tensors(&model);
    let ours: Vec<&str> = named.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(ours, keys.iter().map(String::as_str).collect::<Vec<_>>(), "{file}: state_dict keys differ from timm's");
    let stats = fx.get("p.stats");
    for (i, t) in named.iter().enumerate() {
        let v: Vec<f64> = t.data.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
        let (sum, sq) = (v.iter().sum::<f64>(), v.iter().map(|x| x * x).sum::<f64>());
        let exp = &stats.values[3 * i..3 * i + 3];
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
        assert!(
            close(sum, exp[0]) && close(sq, exp[1]) && v[0] == exp[2],
            "{file}: reference init of `{}` differs from timm's",
            t.key
        );
    }

    // 2. The forward pass, stage by stage.
    let x = Tensor::<B, 4>::from_data(reference_input(seed, [batch, 3, size, size]), dev);
    let outs = model.forward_all(x);
    let mut checked = 0;
    let mut overall = 0.0f64;
    for (out_name, data) in outs.into_named_data() {
        let shape = data.shape.to_vec();
        let worst = compare_entry(&fx, file, &out_name, &shape, &data.to_vec::<f32>().unwrap(), tol);
        overall = overall.max(worst);
        checked += 1;
    }
    eprintln!("{file}: {checked} outputs, max |diff| vs timm {overall:.2e}");
    assert!(checked >= 9, "{file}: only {checked} outputs compared");
    overall
}

/// Training-mode parity of one fixture on the autodiff backend `B`: loss, logits, every
/// gradient (1e-3 relative L2, from the fixture's sketch) and the BN running statistics.
pub fn check_train<B: AutodiffBackend>(file: &str, dev: &B::Device) {
    let fx = Fixture::read(&repo_root().join("tests/fixtures/parity").join(file));
    let name = fx.meta("model");
    let size: usize = fx.meta("size").parse().unwrap();
    let batch: usize = fx.meta("batch").parse().unwrap();
    let seed: u64 = fx.meta("seed").parse().unwrap();
    let nproj: usize = fx.meta("nproj").parse().unwrap();
    let model = reference_init(create_model::<B>(name, 1000, dev).unwrap(), seed);
    let x = Tensor::<B, 4>::from_data(reference_input(seed, [batch, 3, size, size]), dev);
    let labels: Vec<i64> = fx.get("labels").values.iter().map(|&v| v as i64).collect();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [batch]), dev);

    let logits = model.forward(x);
    let loss = CrossEntropyLossConfig::new().with_smoothing(Some(0.1)).init(dev).forward(logits.clone(), y);
    let loss_v: f32 = loss.clone().into_scalar().elem();
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

/// The largest difference between `got` (a tensor's values, row-major) and the fixture's entry
/// `o.{key}` (whole, or a sample of entries plus mean and mean |x|), after checking the shape.
fn compare_entry(fx: &Fixture, file: &str, key: &str, shape: &[usize], got: &[f32], tol: f64) -> f64 {
    let exp_shape: Vec<usize> = fx.get(&format!("o.{key}.shape")).values.iter().map(|&v| v as usize).collect();
    assert_eq!(shape, &exp_shape[..], "{file}: shape of `{key}`");
    let (idx, want): (Vec<usize>, &[f64]) = match fx.tensors.get(&format!("o.{key}")) {
        Some(full) => ((0..full.values.len()).collect(), &full.values),
        None => {
            let st = &fx.get(&format!("o.{key}.stats")).values;
            let n = got.len() as f64;
            let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n;
            let mean_abs = got.iter().map(|&v| (v as f64).abs()).sum::<f64>() / n;
            assert!(
                (mean - st[0]).abs() <= tol && (mean_abs - st[1]).abs() <= tol,
                "{file}: `{key}` mean {mean} / mean|x| {mean_abs}, timm {} / {}",
                st[0],
                st[1]
            );
            (
                fx.get(&format!("o.{key}.idx")).values.iter().map(|&v| v as usize).collect(),
                &fx.get(&format!("o.{key}.val")).values,
            )
        }
    };
    let (worst, at) = idx
        .iter()
        .zip(want)
        .map(|(&i, &w)| ((got[i] as f64 - w).abs(), i))
        .fold((0.0f64, 0usize), |a, b| if b.0 > a.0 { b } else { a });
    assert!(worst <= tol, "{file}: `{key}` differs from timm by {worst:.3e} at flat index {at} (tolerance {tol:e})");
    worst
}

/// Attention parity of one fixture of tools/parity/make_attention_fixtures.py on backend `B`:
/// every MobileViT block's per-layer taps (`stages.S.B.transformer.K`, `stages.S.B.norm`)
/// within `tap_tol` of timm's transformer outputs folded to maps, and every layer's attention
/// probabilities (`MobileVit::forward_attention`) within `prob_tol` of the input of timm's
/// attention dropout. Returns the largest differences (taps, probabilities).
pub fn check_attention<B: Backend>(file: &str, dev: &B::Device, tap_tol: f64, prob_tol: f64) -> (f64, f64) {
    let fx = Fixture::read(&repo_root().join("tests/fixtures/parity").join(file));
    let name = fx.meta("model");
    let size: usize = fx.meta("size").parse().unwrap();
    let seed: u64 = fx.meta("seed").parse().unwrap();
    let batch: usize = fx.meta("batch").parse().unwrap();
    let recorded: Vec<String> = serde_json::from_str(fx.meta("recorded")).unwrap();
    let classes = if name == "tiny" { 10 } else { 1000 };
    let model = reference_init(create_model::<B>(&model_arg(name), classes, dev).unwrap(), seed);
    let x = Tensor::<B, 4>::from_data(reference_input(seed, [batch, 3, size, size]), dev);

    // The taps: every per-layer and post-norm tap the model lists, each recorded by timm.
    let taps: Vec<String> =
        model.tap_names().into_iter().filter(|t| t.contains(".transformer.") || t.ends_with(".norm")).collect();
    assert!(!taps.is_empty(), "{file}: the model lists no per-block taps");
    let outs = model.forward_taps(x.clone(), &taps, name).unwrap();
    let mut tap_worst = 0.0f64;
    for (tap, out) in taps.iter().zip(outs) {
        let exvit_zoo::TapOutput::Map(m) = out else { panic!("{file}: `{tap}` is not a map") };
        let key = format!("t.{tap}");
        assert!(recorded.contains(&key), "{file}: timm recorded no `{key}`");
        let shape = m.dims().to_vec();
        tap_worst =
            tap_worst.max(compare_entry(&fx, file, &key, &shape, &m.into_data().to_vec::<f32>().unwrap(), tap_tol));
    }
    // The attention probabilities of every layer of every block.
    let mut prob_worst = 0.0f64;
    let mut layers = 0;
    for block in model.forward_attention(x, &[], name).unwrap() {
        for (k, p) in block.layers.attention.into_iter().enumerate() {
            let key = format!("a.{}.transformer.{k}", block.name);
            assert!(recorded.contains(&key), "{file}: timm recorded no `{key}`");
            let shape = p.dims().to_vec();
            prob_worst = prob_worst.max(compare_entry(
                &fx,
                file,
                &key,
                &shape,
                &p.into_data().to_vec::<f32>().unwrap(),
                prob_tol,
            ));
            layers += 1;
        }
    }
    let timm_layers = recorded.iter().filter(|k| k.starts_with("a.")).count();
    assert_eq!(layers, timm_layers, "{file}: attention layers compared vs recorded by timm");
    eprintln!(
        "{file}: {} taps, max |diff| {tap_worst:.2e}; {layers} attention layers, max |diff| {prob_worst:.2e}",
        taps.len()
    );
    (tap_worst, prob_worst)
}
