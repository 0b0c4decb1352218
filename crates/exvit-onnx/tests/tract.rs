//! Exported graphs run in tract (a pure-Rust ONNX runtime, independent of burn and of this
//! crate's protobuf code) and agree with exvit's own forward: logits, and with `taps` every
//! stage, ExShortcut and the classifier input. Weights are exvit's reference initialisation
//! (every tensor random, BatchNorm running statistics included, so the BN folding is checked).

use burn::tensor::{Tensor as BurnTensor, TensorData};
use burn_flex::{Flex, FlexDevice};
use exvit_onnx::{export, to_bytes, write_onnx, ExportOptions};
use exvit_zoo::refinit::{reference_init, reference_input};
use exvit_zoo::{create_model, MobileVit};
use tract_onnx::prelude::*;

fn model(name: &str, classes: usize) -> MobileVit<Flex> {
    reference_init(create_model::<Flex>(name, classes, &FlexDevice).unwrap(), 7)
}

/// exvit's outputs by name (logits, stages.N, exshortcuts.K, pooled) for `input`.
fn exvit_outputs(m: &MobileVit<Flex>, input: TensorData) -> Vec<(String, Vec<f32>)> {
    let out = m.forward_all(BurnTensor::from_data(input, &FlexDevice));
    let v = |t: TensorData| t.to_vec::<f32>().unwrap();
    let mut named = vec![("logits".to_string(), v(out.logits.into_data()))];
    for (s, t) in out.stages.into_iter().enumerate() {
        named.push((format!("stages.{s}"), v(t.into_data())));
    }
    for (k, t) in out.exshortcuts.into_iter().enumerate() {
        named.push((format!("exshortcuts.{k}"), v(t.into_data())));
    }
    named.push(("pooled".to_string(), v(out.pooled.into_data())));
    named
}

/// Runs the ONNX bytes in tract on `input` (`shape`), as loaded: a symbolic batch stays
/// symbolic through tract's optimisation. Returns the outputs by name.
fn tract_outputs(bytes: &[u8], input: &TensorData) -> Vec<(String, Vec<f32>)> {
    let model = onnx().model_for_read(&mut &bytes[..]).expect("tract reads the file");
    let names: Vec<String> =
        model.output_outlets().unwrap().iter().map(|o| model.outlet_label(*o).unwrap_or("?").to_string()).collect();
    let plan = model.into_optimized().expect("tract optimises the graph").into_runnable().expect("runnable");
    let shape: Vec<usize> = input.shape.to_vec();
    let x = tract_ndarray::ArrayD::from_shape_vec(shape, input.to_vec::<f32>().unwrap()).unwrap();
    let outs = plan.run(tvec!(Tensor::from(x).into())).expect("tract runs the graph");
    names
        .into_iter()
        .zip(outs)
        .map(|(n, t)| (n, t.to_plain_array_view::<f32>().unwrap().iter().copied().collect()))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Exports `name` at `size` (dynamic batch, with taps), runs a batch of `batch` in both, and
/// checks every output within `tol` (absolute).
fn check(name: &str, size: usize, batch: usize, tol: f32) {
    let m = model(name, 1000);
    let mut opts = ExportOptions::new(name, size);
    opts.dynamic_batch = true;
    opts.taps = true;
    let bytes = to_bytes(&export(&m, &opts).unwrap());
    let input = reference_input(3, [batch, 3, size, size]);
    let want = exvit_outputs(&m, input.clone());
    let got = tract_outputs(&bytes, &input);
    assert_eq!(got.len(), want.len(), "{name}: outputs {:?}", got.iter().map(|g| &g.0).collect::<Vec<_>>());
    for ((gn, g), (wn, w)) in got.iter().zip(&want) {
        assert_eq!(gn, wn, "{name}: output order");
        let d = max_abs_diff(g, w);
        eprintln!("{name}@{size} batch {batch}: {gn:<14} max |tract − exvit| {d:.2e}");
        assert!(d <= tol, "{name}@{size}: `{gn}` differs by {d:.3e} > {tol:.0e}");
    }
}

#[test]
fn mobilevit_xxs_at_256_and_at_sizes_timm_resizes() {
    check("mobilevit_xxs", 256, 2, 1e-4);
    // 200: maps of 25 and 13 in stages 3 and 4, resized to 26 and 14 around the transformer.
    check("mobilevit_xxs", 200, 3, 1e-4);
}

#[test]
fn mobilevit_s_and_exmobilevit_928() {
    check("mobilevit_s", 256, 2, 1e-4);
    check("exmobilevit_928", 256, 1, 1e-4);
    check("exmobilevit_928", 200, 2, 1e-4);
}

#[test]
fn a_fixed_batch_graph_with_ten_classes() {
    // Batch 1, logits only, a model with 10 classes.
    let m = model("exmobilevit_xxs", 10);
    let bytes = to_bytes(&export(&m, &ExportOptions::new("exmobilevit_xxs", 96)).unwrap());
    let input = reference_input(4, [1, 3, 96, 96]);
    let want = exvit_outputs(&m, input.clone());
    let got = tract_outputs(&bytes, &input);
    assert_eq!(got.len(), 1);
    assert!(max_abs_diff(&got[0].1, &want[0].1) <= 1e-4);
}

#[test]
fn bad_options_and_atomic_writes() {
    let m = model("mobilevit_xxs", 10);
    let mut opts = ExportOptions::new("mobilevit_xxs", 64);
    opts.opset = 16;
    let e = export(&m, &opts).unwrap_err().to_string();
    assert!(e.contains("opset 16 is not supported"), "{e}");
    let e = export(&m, &ExportOptions::new("mobilevit_xxs", 16)).unwrap_err().to_string();
    assert!(e.contains("16x16"), "{e}");

    let dir = std::env::temp_dir().join(format!("exvit-onnx-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.onnx");
    let onnx = export(&m, &ExportOptions::new("mobilevit_xxs", 64)).unwrap();
    write_onnx(&path, &onnx).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), to_bytes(&onnx));
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["m.onnx"], "a temporary file was left");
    // A folder that does not exist: an error naming the file.
    let bad = dir.join("no/such/m.onnx");
    let e = write_onnx(&bad, &onnx).unwrap_err().to_string();
    assert!(e.contains("no/such/m.onnx"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
