//! `exvit forward`: one eval-mode forward pass of a zoo model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{FloatDType, TensorData};
use clap::Args;
use exvit_train::precision::cast_outside_norms;
use exvit_zoo::refinit::{reference_init, reference_input};
use exvit_zoo::{create_model, load_safetensors_with, write_safetensors, LoadMode, NonFinite, RawTensor};
use safetensors::{Dtype, SafeTensors};

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// Registry name of the model (`exvit zoo list`), or the path of a .toml variant.
    #[arg(long, default_value = "mobilevit_xxs")]
    model: String,
    /// Weights (safetensors, timm keys), loaded strictly: every key must match.
    #[arg(long, conflicts_with = "init_from")]
    weights: Option<PathBuf>,
    /// The model's pretrained weights (timm's, on the Hugging Face hub), loaded strictly: from
    /// the hub cache timm uses, downloaded into it when missing (docs/models.md#pretrained-weights).
    #[arg(long, conflicts_with_all = ["weights", "init_from"])]
    pretrained: bool,
    /// Weights of a backbone: only the trunk (stem, stages) must match; the rest keeps the
    /// reference initialisation and is listed.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// NCHW f32 input batch (safetensors). Without it, a reference input of `--batch` images of
    /// `--size`x`--size` is generated from `--seed`.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Tensor name inside `--input`.
    #[arg(long, default_value = "input")]
    key: String,
    /// Side of the generated input.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Batch of the generated input.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the reference initialisation (and of the generated input). Without
    /// `--weights`, the logits are those of a seeded random model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of classes of the classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Load weights even when they hold NaN or Inf (refused by default, naming the tensors).
    #[arg(long)]
    allow_nonfinite: bool,
    /// How many top classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Write `logits`, `pooled` and every stage output here (safetensors).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Device: `cpu`, `cuda[:N]` (a build with the `cuda` feature) or `wgpu[:N]` (Vulkan; the `wgpu` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compare every output with this file (as written by --output, e.g. on another device):
    /// prints the max abs difference and the relative error ‖a−b‖/‖b‖ per tensor, and fails when
    /// one is above --tolerance.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Relative-error bound of --compare (a GPU's TF32 matmuls need ~1e-2).
    #[arg(long, default_value_t = 1e-2)]
    tolerance: f64,
    /// The dtype of the convs and matmuls: `f32`, or `f16` (BatchNorm and LayerNorm, with the
    /// softmax, stay f32; outputs are returned in f32). bf16 is for training on CUDA
    /// (`exvit train --precision bf16`).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    dtype: String,
}

/// Reads a rank-4 f32 tensor `key` from a safetensors file.
fn read_input(path: &Path, key: &str) -> Result<TensorData> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read input file {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let view = st.tensor(key).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        anyhow::anyhow!("{}: no tensor `{key}` (it has: {}); choose one with --key", path.display(), names.join(", "))
    })?;
    let shape = view.shape().to_vec();
    ensure!(view.dtype() == Dtype::F32, "{}: tensor `{key}` is {:?}, expected F32", path.display(), view.dtype());
    ensure!(
        shape.len() == 4 && shape[1] == 3,
        "{}: tensor `{key}` has shape {shape:?}, expected an NCHW batch [N, 3, H, W]",
        path.display()
    );
    let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Ok(TensorData::new(values, shape))
}

pub fn run(args: ForwardArgs) -> Result<()> {
    let device = crate::device::parse_device(&args.device)?;
    crate::with_backend!(device, |B, dev| run_on::<B>(args, dev))
}

fn run_on<B: Backend>(mut args: ForwardArgs, dev: B::Device) -> Result<()> {
    args.weights = crate::common::weights_or_pretrained(&args.model, args.weights.take(), args.pretrained)?;
    ensure!(args.size >= 32 && args.batch >= 1, "--size must be at least 32 and --batch at least 1");
    let data = match &args.input {
        Some(p) => read_input(p, &args.key)?,
        None => reference_input(args.seed, [args.batch, 3, args.size, args.size]),
    };
    let shape = data.shape.clone();
    let model = reference_init(create_model::<B>(&args.model, args.num_classes, &dev)?, args.seed);
    let nonfinite = NonFinite::allow_if(args.allow_nonfinite);
    let model = match (&args.weights, &args.init_from) {
        (Some(w), _) => {
            let (m, report) = load_safetensors_with(model, w, LoadMode::Strict, nonfinite)?;
            tracing::info!(file = %w.display(), tensors = report.loaded.len(), "loaded weights (strict)");
            m
        }
        (None, Some(w)) => {
            let (m, report) = load_safetensors_with(model, w, LoadMode::FromBackbone, nonfinite)?;
            tracing::info!(file = %w.display(), tensors = report.loaded.len(), "loaded backbone weights");
            for p in &report.fresh {
                println!("fresh   {p}");
            }
            for p in &report.unused {
                println!("unused  {p}");
            }
            m
        }
        (None, None) => model,
    };
    tracing::info!(model = %args.model, input = ?shape.as_slice(), seed = args.seed, dtype = %args.dtype, "forward (eval mode)");

    let t0 = Instant::now();
    let input = Tensor::<B, 4>::from_data(data, &dev);
    let outs = exvit_layers::fast::on_pool(|| {
        if args.dtype == "f16" {
            cast_outside_norms(&model, FloatDType::F16).forward_all(input.cast(FloatDType::F16))
        } else {
            model.forward_all(input)
        }
    });
    let logits = outs.logits.clone().cast(FloatDType::F32);
    let probs = softmax(logits.clone(), 1);
    let logits_shape = logits.dims();
    let elapsed = t0.elapsed();

    println!("model   {}", args.model);
    println!("input   {:?}", shape.as_slice());
    println!("logits  {:?}  ({:.1} ms)", logits_shape, elapsed.as_secs_f64() * 1e3);
    let p: Vec<f32> = probs.into_data().to_vec().context("reading probabilities")?;
    let l: Vec<f32> = logits.into_data().to_vec().context("reading logits")?;
    let k = args.top.min(logits_shape[1]);
    for (i, (row, lrow)) in p.chunks(logits_shape[1]).zip(l.chunks(logits_shape[1])).enumerate() {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> =
            idx[..k].iter().map(|&c| format!("{c} (p={:.4}, logit={:+.4})", row[c], lrow[c])).collect();
        println!("image {i}: top-{k} classes {}", top.join(", "));
    }

    // In f32 whatever the compute dtype (to compare with, or to write).
    let named: Vec<_> = outs.into_named_data().into_iter().map(|(n, d)| (n, d.convert::<f32>())).collect();
    if let Some(reference) = &args.compare {
        compare(&named, reference, args.tolerance)?;
    }
    if let Some(out) = &args.output {
        let mut tensors: Vec<RawTensor> = Vec::new();
        for (name, data) in named {
            let shape = data.shape.as_slice().to_vec();
            let values = data.to_vec::<f32>().context("reading an output")?;
            tensors.push((name, Dtype::F32, shape, values.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        let meta =
            HashMap::from([("model".to_string(), args.model.clone()), ("seed".to_string(), args.seed.to_string())]);
        write_safetensors(out, &tensors, meta).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote   {}", out.display());
    }
    Ok(())
}

/// Compares named outputs with a reference safetensors file (same names and shapes).
fn compare(named: &[(String, TensorData)], reference: &Path, tolerance: f64) -> Result<()> {
    let bytes = std::fs::read(reference).with_context(|| format!("reading {}", reference.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not safetensors", reference.display()))?;
    let mut worst = 0f64;
    for (name, data) in named {
        let view = st.tensor(name).with_context(|| format!("{}: no tensor `{name}`", reference.display()))?;
        ensure!(
            view.shape() == data.shape.as_slice(),
            "{}: `{name}` is {:?}, this run's is {:?}",
            reference.display(),
            view.shape(),
            data.shape
        );
        let want: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let got = data.to_vec::<f32>().context("reading an output")?;
        let (mut max_abs, mut diff2, mut ref2) = (0f64, 0f64, 0f64);
        for (a, b) in got.iter().zip(&want) {
            let d = f64::from(*a) - f64::from(*b);
            max_abs = max_abs.max(d.abs());
            diff2 += d * d;
            ref2 += f64::from(*b).powi(2);
        }
        let rel = diff2.sqrt() / ref2.sqrt().max(1e-30);
        worst = worst.max(rel);
        println!("compare {name:<14} max_abs {max_abs:.3e}  rel {rel:.3e}");
    }
    ensure!(
        worst <= tolerance,
        "outputs differ from {}: worst relative error {worst:.3e} > {tolerance:.1e}",
        reference.display()
    );
    println!("compare ok: worst relative error {worst:.3e} <= {tolerance:.1e} against {}", reference.display());
    Ok(())
}
