//! Eval-mode parity with timm 1.0.31, on fixtures from tools/parity/make_fixtures.py.
//!
//! Both sides initialise the same model with the reference initialisation (SplitMix64 streams
//! keyed by the state_dict key), run a batch of 2 reference inputs, and compare every stage:
//! `stem`, `stages.0..4`, `final_conv`, `exshortcuts.N`, `pooled` and `logits`, within 1e-4.
//! ExMobileViT is compared with a PyTorch implementation on timm's body (the fixture script's
//! `ExMobileViT`), and a TOML variant with the same network built by timm's ByobNet.

use burn::prelude::*;
use burn_flex::{Flex, FlexDevice};
use exvit_tests::{repo_root, Fixture};
use exvit_zoo::refinit::{reference_init, reference_input};
use exvit_zoo::{create_model, named_tensors};

type B = Flex;
const TOL: f64 = 1e-4;

/// The registry name, or for `tiny` the TOML variant that describes it.
fn model_arg(name: &str) -> String {
    if name == "tiny" {
        repo_root().join("tests/fixtures/parity/tiny.toml").to_string_lossy().into_owned()
    } else {
        name.to_string()
    }
}

fn check_fixture(file: &str) {
    let fx = Fixture::read(&repo_root().join("tests/fixtures/parity").join(file));
    let name = fx.meta("model");
    let classes = fx.get("o.logits.shape").values[1] as usize;
    let size: usize = fx.meta("size").parse().unwrap();
    let seed: u64 = fx.meta("seed").parse().unwrap();
    let batch: usize = fx.meta("batch").parse().unwrap();
    let dev = FlexDevice;
    let model = reference_init(create_model::<B>(&model_arg(name), classes, &dev).unwrap(), seed);

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
    let x = Tensor::<B, 4>::from_data(reference_input(seed, [batch, 3, size, size]), &dev);
    let outs = model.forward_all(x);
    let mut checked = 0;
    let mut overall = 0.0f64;
    for (out_name, data) in outs.into_named_data() {
        let shape_key = format!("o.{out_name}.shape");
        let exp_shape: Vec<usize> = fx.get(&shape_key).values.iter().map(|&v| v as usize).collect();
        assert_eq!(data.shape.as_slice(), &exp_shape[..], "{file}: shape of `{out_name}`");
        let got: Vec<f32> = data.to_vec().unwrap();
        let (idx, want): (Vec<usize>, &[f64]) = match fx.tensors.get(&format!("o.{out_name}")) {
            Some(full) => ((0..full.values.len()).collect(), &full.values),
            None => {
                let idx = fx.get(&format!("o.{out_name}.idx")).values.iter().map(|&v| v as usize).collect();
                let st = &fx.get(&format!("o.{out_name}.stats")).values;
                let n = got.len() as f64;
                let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n;
                let mean_abs = got.iter().map(|&v| (v as f64).abs()).sum::<f64>() / n;
                assert!(
                    (mean - st[0]).abs() <= TOL && (mean_abs - st[1]).abs() <= TOL,
                    "{file}: `{out_name}` mean {mean} / mean|x| {mean_abs}, timm {} / {}",
                    st[0],
                    st[1]
                );
                (idx, &fx.get(&format!("o.{out_name}.val")).values)
            }
        };
        let mut worst = (0.0f64, 0usize);
        for (&i, &w) in idx.iter().zip(want) {
            let d = (got[i] as f64 - w).abs();
            if d > worst.0 {
                worst = (d, i);
            }
        }
        assert!(
            worst.0 <= TOL,
            "{file}: `{out_name}` differs from timm by {:.3e} at flat index {} (tolerance {TOL})",
            worst.0,
            worst.1
        );
        overall = overall.max(worst.0);
        checked += 1;
    }
    eprintln!("{file}: {checked} outputs, max |diff| vs timm {overall:.2e}");
    assert!(checked >= 9, "{file}: only {checked} outputs compared");
}

fn check_sizes(model: &str) {
    for size in [160, 192, 256, 288, 320, 200] {
        check_fixture(&format!("{model}_{size}.safetensors"));
    }
}

#[test]
fn mobilevit_xxs_matches_timm_at_every_size() {
    // 160, 192, 256, 288, 320 (cvnets' multi-scale sizes) and 200: at 200 stages.2 runs at
    // 25x25, so the MobileViT block resizes to 26x26 and back.
    check_sizes("mobilevit_xxs");
}

#[test]
fn mobilevit_xs_matches_timm_at_every_size() {
    check_sizes("mobilevit_xs");
}

#[test]
fn mobilevit_s_matches_timm_at_every_size() {
    check_sizes("mobilevit_s");
}

#[test]
fn exmobilevit_matches_the_pytorch_reference() {
    for f in [
        "exmobilevit_576_256",
        "exmobilevit_640_256",
        "exmobilevit_928_200",
        "exmobilevit_xxs_256",
        "exmobilevit_xs_256",
    ] {
        check_fixture(&format!("{f}.safetensors"));
    }
}

#[test]
fn toml_variant_matches_timm_byobnet() {
    check_fixture("tiny_64.safetensors");
}
