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
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
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

#[test]
fn zoo_list_json_has_the_exact_parameter_counts() {
    let (ok, stdout, stderr) = exvit(&["zoo", "list", "--json"]);
    assert!(ok, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let count = |name: &str| {
        let row = rows.as_array().unwrap().iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name}"));
        let per_module: u64 = row["modules"].as_array().unwrap().iter().map(|m| m[1].as_u64().unwrap()).sum();
        assert_eq!(per_module, row["params"].as_u64().unwrap(), "{name}: modules add up");
        row["params"].as_u64().unwrap()
    };
    assert_eq!(count("mobilevit_xxs"), 1_272_024);
    assert_eq!(count("mobilevit_xs"), 2_317_848);
    assert_eq!(count("mobilevit_s"), 5_578_632);
    assert_eq!(count("exmobilevit_576"), 5_500_168);
    assert_eq!(count("exmobilevit_640"), 5_572_488);
    assert_eq!(count("exmobilevit_928"), 5_899_976);
    let s = rows.as_array().unwrap().iter().find(|r| r["name"] == "mobilevit_s").unwrap();
    assert_eq!(s["pretrained"]["crop_pct"], 0.9);
    assert_eq!(s["pretrained"]["interpolation"], "bicubic");
    let control = rows.as_array().unwrap().iter().find(|r| r["name"] == "mobilevit_s_head928").unwrap();
    assert_eq!(
        (control["control_for"].as_str(), control["classifier_width"].as_u64()),
        (Some("exmobilevit_928"), Some(928))
    );
}

#[test]
fn forward_loads_weights_strictly_or_from_a_backbone() {
    let dir = tempdir();
    let w = dir.join("xxs.safetensors");
    let (ok, _, stderr) =
        exvit(&["zoo", "init", "--model", "mobilevit_xxs", "--seed", "3", "--out", w.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = exvit(&["forward", "--weights", w.to_str().unwrap(), "--size", "64"]);
    assert!(ok && stdout.contains("logits  [1, 1000]"), "{stdout}{stderr}");
    // Strict loading into another model fails and names a key with both shapes.
    let (ok, _, stderr) =
        exvit(&["forward", "--model", "exmobilevit_xxs", "--weights", w.to_str().unwrap(), "--size", "64"]);
    assert!(!ok && stderr.contains("missing key `exshortcuts.0.conv.weight`"), "{stderr}");
    // From a backbone: the trunk loads, the rest is listed.
    let (ok, stdout, stderr) =
        exvit(&["forward", "--model", "exmobilevit_xxs", "--init-from", w.to_str().unwrap(), "--size", "64"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("fresh   missing key `exshortcuts.1.bn.weight`"), "{stdout}");
    assert!(stdout.contains("fresh   classifier `head.fc.weight`"), "{stdout}");
}

#[test]
fn data_check_counts_classes_and_reports_bad_files() {
    let dir = tempdir().join("ds");
    let _ = std::fs::remove_dir_all(&dir);
    let train = dir.join("train");
    for (class, n) in [("cat", 2), ("dog", 1)] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        for i in 0..n {
            // A 1x1 grey PNG.
            let png = [
                0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0,
                0, 0, 1, 8, 0, 0, 0, 0, 0x3A, 0x7E, 0x9B, 0x55, 0, 0, 0, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C,
                0x63, 0x68, 0, 0, 0, 0x82, 0, 0x81, 0x77, 0xCD, 0x72, 0xB6, 0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE,
                0x42, 0x60, 0x82,
            ];
            std::fs::write(train.join(class).join(format!("{i}.png")), png).unwrap();
        }
    }
    std::fs::write(train.join("dog/broken.jpg"), b"\xFF\xD8\xFF\xE0 truncated").unwrap();
    let manifests = dir.join("manifests");
    let (ok, stdout, stderr) =
        exvit(&["data", "check", dir.to_str().unwrap(), "--manifest-dir", manifests.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("split train: 4 images, 2 classes"), "{stdout}");
    assert!(stdout.contains("bad images: 1") && stdout.contains("broken.jpg: corrupt jpeg"), "{stdout}");
    assert!(manifests.join("ds-train.parquet").exists(), "{stdout}");
    let (ok, _, stderr) = exvit(&[
        "data",
        "check",
        dir.to_str().unwrap(),
        "--manifest-dir",
        manifests.to_str().unwrap(),
        "--on-bad-image",
        "fail",
    ]);
    assert!(!ok && stderr.contains("broken.jpg"), "{stderr}");
}

#[test]
fn forward_compare_checks_outputs_against_a_reference_file() {
    let dir = tempdir();
    let reference = dir.join("cpu.safetensors");
    let args = ["forward", "--model", "mobilevit_xxs", "--size", "64", "--batch", "1"];
    let (ok, _, stderr) = exvit(&[&args[..], &["--output", reference.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    // The same run again: every output equal.
    let (ok, stdout, stderr) = exvit(&[&args[..], &["--compare", reference.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("compare logits") && stdout.contains("compare ok"), "{stdout}");
    // Another seed: other weights and input, refused with the worst relative error.
    let (ok, _, stderr) = exvit(&[&args[..], &["--seed", "1", "--compare", reference.to_str().unwrap()]].concat());
    assert!(!ok && stderr.contains("worst relative error"), "{stderr}");
}

#[test]
fn device_flag_is_checked_before_any_work() {
    let (ok, _, stderr) = exvit(&["forward", "--model", "mobilevit_xxs", "--device", "tpu"]);
    assert!(!ok && stderr.contains("expected cpu, cuda, cuda:N, wgpu or wgpu:N"), "{stderr}");
    let (ok, _, stderr) = exvit(&["forward", "--model", "mobilevit_xxs", "--device", "wgpu:x"]);
    assert!(!ok && stderr.contains("--device wgpu:x: expected"), "{stderr}");
    let (ok, _, stderr) = exvit(&["bench", "--device", "cuda:0"]);
    assert!(!ok, "{stderr}");
    // Without the `cuda` feature the message says how to build it; with it, on a machine
    // without a GPU, it names the missing driver (never burn's panic).
    assert!(
        stderr.contains("without the `cuda` feature")
            || stderr.contains("libcuda.so")
            || stderr.contains("CUDA device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Likewise wgpu: how to build it, or (with the feature) the missing Vulkan driver.
    let (ok, _, stderr) = exvit(&["forward", "--model", "mobilevit_xxs", "--device", "wgpu:9"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("without the `wgpu` feature")
            || stderr.contains("Vulkan loader")
            || stderr.contains("Vulkan adapter(s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bf16_is_refused_on_the_cpu_with_the_reason() {
    for args in [
        &["bench", "--precision", "bf16"][..],
        &[
            "train",
            "--model",
            "mobilevit_xxs",
            "--data",
            "/nonexistent",
            "--out",
            "/nonexistent/run",
            "--precision",
            "bf16",
        ][..],
    ] {
        let (ok, _, stderr) = exvit(args);
        assert!(!ok && stderr.contains("--precision bf16 needs --device cuda"), "{args:?}: {stderr}");
    }
    let (ok, _, stderr) = exvit(&["bench", "--precision", "f16"]);
    assert!(!ok && stderr.contains("expected f32 or bf16"), "{stderr}");
}

/// Weights holding NaN or Inf are refused with one error that counts them and names the
/// tensors; `--allow-nonfinite` loads them (and then the logits are not finite).
#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let dir = tempdir();
    let (w, bad) = (dir.join("nf.safetensors"), dir.join("nf-bad.safetensors"));
    let (ok, _, stderr) =
        exvit(&["zoo", "init", "--model", "mobilevit_xxs", "--seed", "3", "--out", w.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&w).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let key = "stages.3.1.transformer.2.mlp.fc1.weight";
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let t = owned.iter_mut().find(|t| t.0 == key).expect("the tensor exists");
    t.3[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &bad).unwrap();

    let (ok, _, stderr) = exvit(&["forward", "--weights", bad.to_str().unwrap(), "--size", "64"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!("1 non-finite value(s) in 1 tensor(s): `{key}`: 1 Inf; refusing these weights")),
        "{stderr}"
    );
    assert!(stderr.contains(bad.to_str().unwrap()) && !stderr.contains("panicked"), "{stderr}");
    let (ok, stdout, stderr) =
        exvit(&["forward", "--weights", bad.to_str().unwrap(), "--size", "64", "--allow-nonfinite"]);
    assert!(ok && stdout.contains("logits  [1, 1000]"), "{stdout}{stderr}");
    assert!(stdout.contains("NaN") || stdout.contains("inf"), "an Inf weight should poison the logits: {stdout}");
    let (ok, _, stderr) = exvit(&["forward", "--weights", w.to_str().unwrap(), "--size", "64"]);
    assert!(ok, "the clean file still loads: {stderr}");
}
