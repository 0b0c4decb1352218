//! The `exvit` binary: the interim main job and its error messages.

use std::path::Path;
use std::process::Command;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn exvit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exvit")).args(args).output().expect("run exvit");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn write_tensor(path: &Path, key: &str, shape: &[usize], dtype: Dtype) {
    let n: usize = shape.iter().product();
    let bytes = vec![0u8; n * dtype.bitsize() / 8];
    let view = TensorView::new(dtype, shape.to_vec(), &bytes).unwrap();
    safetensors::serialize_to_file(vec![(key.to_string(), view)], None, path).unwrap();
}

#[test]
fn forward_prints_logits_shape_and_top_classes() {
    let dir = tempdir();
    let out = dir.join("out.safetensors");
    let (ok, stdout, stderr) = exvit(&[
        "forward",
        "--model",
        "mobilevit_xxs",
        "--size",
        "64",
        "--batch",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("logits  [2, 1000]"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("image ")).count(), 2, "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("logits").unwrap().shape(), &[2, 1000]);
    assert_eq!(st.tensor("stages.4").unwrap().shape(), &[2, 80, 2, 2]);
    assert!(!dir.join("out.safetensors.tmp").exists(), "temporary file left behind");
}

#[test]
fn forward_reads_an_input_file() {
    let dir = tempdir();
    let input = dir.join("in.safetensors");
    write_tensor(&input, "pixels", &[1, 3, 64, 64], Dtype::F32);
    let (ok, stdout, stderr) = exvit(&["forward", "--input", input.to_str().unwrap(), "--key", "pixels"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("input   [1, 3, 64, 64]"), "{stdout}");
}

#[test]
fn forward_errors_name_the_file_and_tensor() {
    let dir = tempdir();
    let input = dir.join("in.safetensors");
    write_tensor(&input, "input", &[1, 4, 64, 64], Dtype::F32);
    let p = input.to_str().unwrap();

    let (ok, _, stderr) = exvit(&["forward", "--input", p]);
    assert!(!ok && stderr.contains("in.safetensors") && stderr.contains("[1, 4, 64, 64]"), "{stderr}");

    let (ok, _, stderr) = exvit(&["forward", "--input", p, "--key", "image"]);
    assert!(!ok && stderr.contains("no tensor `image`") && stderr.contains("input"), "{stderr}");

    write_tensor(&input, "input", &[3, 64, 64], Dtype::F32);
    let (ok, _, stderr) = exvit(&["forward", "--input", p]);
    assert!(!ok && stderr.contains("[3, 64, 64]"), "{stderr}");

    write_tensor(&input, "input", &[1, 3, 64, 64], Dtype::F64);
    let (ok, _, stderr) = exvit(&["forward", "--input", p]);
    assert!(!ok && stderr.contains("F64"), "{stderr}");

    let (ok, _, stderr) = exvit(&["forward", "--input", dir.join("missing.safetensors").to_str().unwrap()]);
    assert!(!ok && stderr.contains("missing.safetensors"), "{stderr}");

    let (ok, _, stderr) = exvit(&["forward", "--model", "resnet50"]);
    assert!(!ok && stderr.contains("unknown model `resnet50`") && stderr.contains("mobilevit_xxs"), "{stderr}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-cli-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
