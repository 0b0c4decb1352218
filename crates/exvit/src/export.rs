//! `exvit export`: a zoo model (with weights, pretrained, a backbone or at a seeded init) as an
//! ONNX file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn_flex::{Flex, FlexDevice};
use clap::Args;
use exvit_onnx::{export, write_onnx, ExportOptions, OPSETS};
use exvit_zoo::{count_params, load_model_with, resolve_model, ModelWeights, NonFinite};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Registry name of the model (`exvit zoo list`), or the path of a .toml variant.
    #[arg(long)]
    model: String,
    /// Weights (safetensors, timm keys), loaded strictly; the class count is the file's.
    #[arg(long, conflicts_with = "init_from")]
    weights: Option<PathBuf>,
    /// The model's pretrained weights (timm's, on the Hugging Face hub): from the hub cache
    /// timm uses, downloaded into it when missing (docs/models.md#pretrained-weights).
    #[arg(long, conflicts_with_all = ["weights", "init_from"])]
    pretrained: bool,
    /// A backbone's weights: the trunk from the file, the rest at the init of `--seed`.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Seed of the initialisation (without --weights / --pretrained).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classes of the classifier (without --weights / --pretrained, which have their own).
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Output file (written to a temporary file, then renamed).
    #[arg(long)]
    out: PathBuf,
    /// Input side (default: the model's pretrained config, 256). The graph's spatial size is
    /// fixed: the MobileViT blocks' patch grids depend on it.
    #[arg(long)]
    size: Option<usize>,
    /// A symbolic batch dimension (`batch`) instead of batch 1.
    #[arg(long)]
    dynamic_batch: bool,
    /// ONNX opset (17 to 21).
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// Also output every stage's map (`stages.N`), the ExShortcuts' pooled vectors
    /// (`exshortcuts.K`) and the classifier's input (`pooled`).
    #[arg(long)]
    taps: bool,
    /// Load weights even when they hold NaN or Inf (refused by default, naming the tensors).
    #[arg(long)]
    allow_nonfinite: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    anyhow::ensure!(
        OPSETS.contains(&a.opset),
        "--opset {}: exvit exports opsets {}..={}",
        a.opset,
        OPSETS.start(),
        OPSETS.end()
    );
    let cfg = resolve_model(&a.model, a.num_classes).with_context(|| format!("model `{}`", a.model))?;
    let weights = crate::common::weights_or_pretrained(&a.model, a.weights.clone(), a.pretrained)?;
    let source = match (&weights, &a.init_from) {
        (Some(w), _) => ModelWeights::File(w),
        (None, Some(b)) => ModelWeights::Backbone { path: b, seed: a.seed },
        (None, None) => ModelWeights::Init { seed: a.seed },
    };
    let model =
        load_model_with::<Flex>(&a.model, source, a.num_classes, &FlexDevice, NonFinite::allow_if(a.allow_nonfinite))
            .with_context(|| format!("model `{}`", a.model))?;
    let size = a.size.unwrap_or(cfg.pretrained.input_size[1]);
    let opts = ExportOptions {
        size: [size, size],
        dynamic_batch: a.dynamic_batch,
        opset: a.opset,
        taps: a.taps,
        model_name: cfg.name.clone(),
    };
    let onnx = export(&model, &opts).context("exporting")?;
    write_onnx(&a.out, &onnx).context("writing the ONNX file")?;
    let graph = onnx.graph.as_ref().expect("a graph");
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    let folded: i64 = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == exvit_onnx::proto::DataType::Float as i32)
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    println!(
        "wrote {}: {}, input [{}, 3, {size}, {size}], opset {}, {} nodes, {folded} weights (the model's {} parameters, BatchNorm folded), {:.1} MB",
        a.out.display(),
        cfg.name,
        if a.dynamic_batch { "batch" } else { "1" },
        a.opset,
        graph.node.len(),
        count_params(&model),
        bytes as f64 / 1e6
    );
    println!("outputs: {}", graph.output.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "));
    Ok(())
}
