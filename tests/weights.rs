//! Weights in and out: a checkpoint written by timm/PyTorch loads strictly and reproduces
//! timm's outputs; strict and from-backbone loading; every error names the key and shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn_flex::{Flex, FlexDevice};
use exvit_tests::{repo_root, Fixture};
use exvit_zoo::refinit::{reference_init, reference_input};
use exvit_zoo::{
    create_model, load_safetensors, named_tensors, resolve_model, save_safetensors, ExShortcutSpec, LoadMode,
    MobileVit, Problem, WeightsError,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = Flex;
const DEV: FlexDevice = FlexDevice;

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/parity")
}

fn tiny_toml() -> String {
    fixtures().join("tiny.toml").to_string_lossy().into_owned()
}

fn tiny() -> MobileVit<B> {
    create_model::<B>(&tiny_toml(), 10, &DEV).unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-weights-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies the timm checkpoint, letting `edit` drop, add or reshape tensors.
fn edited_checkpoint(dir: &Path, edit: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("timm_tiny.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut ts);
    let views: Vec<(String, TensorView)> =
        ts.iter().map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let path = dir.join("edited.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn a_timm_checkpoint_loads_strictly_and_reproduces_timm() {
    let (model, report) =
        load_safetensors(tiny(), &fixtures().join("timm_tiny.safetensors"), LoadMode::Strict).unwrap();
    assert_eq!(report.loaded.len(), named_tensors(&model).len());
    // num_batches_tracked came from an int64 0-d tensor (3 train batches in the script).
    let nbt = named_tensors(&model).into_iter().find(|t| t.key == "stem.bn.num_batches_tracked").unwrap();
    assert_eq!(nbt.data.to_vec::<f32>().unwrap(), vec![3.0]);
    let fx = Fixture::read(&fixtures().join("tiny_ckpt_64.safetensors"));
    let x = Tensor::<B, 4>::from_data(reference_input(42, [2, 3, 64, 64]), &DEV);
    let logits: Vec<f32> = model.forward(x).into_data().to_vec().unwrap();
    let want = &fx.get("o.logits").values;
    let worst = logits.iter().zip(want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "logits differ from timm's by {worst:e}");
}

#[test]
fn save_then_load_round_trips_with_timm_dtypes() {
    let dir = tmpdir("roundtrip");
    let path = dir.join("w.safetensors");
    let model = reference_init(tiny(), 7);
    save_safetensors(&model, &path, HashMap::from([("k".into(), "v".into())])).unwrap();
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let nbt = st.tensor("stages.0.0.conv1_1x1.bn.num_batches_tracked").unwrap();
    assert_eq!((nbt.dtype(), nbt.shape()), (Dtype::I64, &[][..]));
    assert_eq!(st.tensor("head.fc.weight").unwrap().shape(), &[10, 64]);
    let (loaded, _) = load_safetensors(reference_init(tiny(), 8), &path, LoadMode::Strict).unwrap();
    for (a, b) in named_tensors(&model).iter().zip(named_tensors(&loaded).iter()) {
        assert_eq!(a.key, b.key);
        assert_eq!(a.data.to_vec::<f32>().unwrap(), b.data.to_vec::<f32>().unwrap(), "{}", a.key);
    }
}

fn problems(r: Result<(MobileVit<B>, exvit_zoo::LoadReport), WeightsError>) -> (Vec<Problem>, String) {
    match r {
        Err(e @ WeightsError::Mismatch { .. }) => {
            let msg = e.to_string();
            let WeightsError::Mismatch { problems, .. } = e else { unreachable!() };
            (problems, msg)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loading should have failed"),
    }
}

#[test]
fn strict_mode_names_missing_unexpected_and_misshapen_keys() {
    let dir = tmpdir("strict");
    let path = edited_checkpoint(&dir, |ts| {
        ts.retain(|(k, ..)| k != "stages.2.1.norm.bias");
        ts.push(("extra.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
        let fc = ts.iter_mut().find(|(k, ..)| k == "head.fc.weight").unwrap();
        fc.2 = vec![20, 32];
    });
    let (problems, msg) = problems(load_safetensors(tiny(), &path, LoadMode::Strict));
    assert_eq!(problems.len(), 3, "{msg}");
    assert!(msg.contains("edited.safetensors"), "{msg}");
    assert!(msg.contains("missing key `stages.2.1.norm.bias` (model shape [16])"), "{msg}");
    assert!(msg.contains("unexpected key `extra.weight` (file shape [2])"), "{msg}");
    assert!(msg.contains("shape mismatch for `head.fc.weight`: file [20, 32] vs model [10, 64]"), "{msg}");
}

#[test]
fn from_backbone_loads_the_trunk_and_lists_the_rest() {
    // An ExMobileViT-style variant of tiny: taps on stages.2 and stages.3, a wider final_conv.
    let mut cfg = resolve_model(&tiny_toml(), 10).unwrap();
    cfg.exshortcuts = vec![ExShortcutSpec { stage: 2, channels: 8 }, ExShortcutSpec { stage: 3, channels: 8 }];
    cfg.num_features = 48;
    let model: MobileVit<B> = cfg.init(&DEV);
    let path = fixtures().join("timm_tiny.safetensors");
    assert!(load_safetensors(model.clone(), &path, LoadMode::Strict).is_err());
    let (loaded, report) = load_safetensors(model, &path, LoadMode::FromBackbone).unwrap();
    let fresh: Vec<String> = report.fresh.iter().map(|p| p.to_string()).collect();
    assert!(
        fresh.contains(
            &"shape mismatch for `final_conv.conv.weight`: file [64, 32, 1, 1] vs model [48, 32, 1, 1]".to_string()
        ),
        "{fresh:?}"
    );
    assert!(
        fresh.contains(&"missing key `exshortcuts.0.conv.weight` (model shape [8, 16, 1, 1])".to_string()),
        "{fresh:?}"
    );
    // The classifier has the same shape here ([10, 64]: 8 + 8 + 48 inputs) but a different input
    // layout: it is never taken from a backbone.
    assert!(
        fresh.contains(&"classifier `head.fc.weight` is not taken from a backbone checkpoint".to_string()),
        "{fresh:?}"
    );
    assert!(report.fresh.iter().all(|p| !p.key().starts_with("stages.") && !p.key().starts_with("stem.")));
    assert!(report.loaded.iter().any(|k| k == "stages.4.1.transformer.0.attn.qkv.weight"));
    // The trunk holds the checkpoint's values.
    let want = Fixture::read(&path);
    let got = named_tensors(&loaded).into_iter().find(|t| t.key == "stem.conv.weight").unwrap();
    let got: Vec<f64> = got.data.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect();
    assert_eq!(got, want.get("stem.conv.weight").values);
}

#[test]
fn from_backbone_still_requires_the_trunk() {
    let dir = tmpdir("trunk");
    let path = edited_checkpoint(&dir, |ts| ts.retain(|(k, ..)| k != "stages.1.0.conv2_kxk.conv.weight"));
    let (problems, msg) = problems(load_safetensors(tiny(), &path, LoadMode::FromBackbone));
    assert_eq!(problems.len(), 1, "{msg}");
    assert!(msg.contains("missing key `stages.1.0.conv2_kxk.conv.weight` (model shape [16, 1, 3, 3])"), "{msg}");
}

#[test]
fn bad_files_get_clear_errors() {
    let dir = tmpdir("bad");
    let missing = dir.join("nope.safetensors");
    let e = load_safetensors(tiny(), &missing, LoadMode::Strict).unwrap_err().to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let e = load_safetensors(tiny(), &garbage, LoadMode::Strict).unwrap_err().to_string();
    assert!(e.contains("garbage.safetensors") && e.contains("not a valid safetensors file"), "{e}");
    let ints = edited_checkpoint(&dir, |ts| {
        let t = ts.iter_mut().find(|(k, ..)| k == "stem.conv.weight").unwrap();
        t.1 = Dtype::I32;
    });
    let e = load_safetensors(tiny(), &ints, LoadMode::Strict).unwrap_err().to_string();
    assert!(e.contains("`stem.conv.weight`") && e.contains("I32"), "{e}");
    let e = save_safetensors(&tiny(), &dir.join("no/such/dir/w.safetensors"), HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("no/such/dir/w.safetensors"), "{e}");
}

#[test]
fn toml_variants_are_validated() {
    let dir = tmpdir("toml");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(tiny_toml()).unwrap().replace("num_features", "num_featurez"))
        .unwrap();
    let e = resolve_model(bad.to_str().unwrap(), 10).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("num_featurez"), "{e}");
    let bad_tap = dir.join("tap.toml");
    let text = std::fs::read_to_string(tiny_toml()).unwrap();
    std::fs::write(
        &bad_tap,
        text.replacen("num_features = 64", "num_features = 64\nexshortcuts = [{ stage = 7, channels = 8 }]", 1),
    )
    .unwrap();
    let e = resolve_model(bad_tap.to_str().unwrap(), 10).unwrap_err().to_string();
    assert!(e.contains("exshortcuts[0]: taps stages.7"), "{e}");
    let e = resolve_model("mobilevit_m", 10).unwrap_err().to_string();
    assert!(e.contains("unknown model `mobilevit_m`") && e.contains("exmobilevit_928"), "{e}");
}
