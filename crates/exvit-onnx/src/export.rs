//! A [`MobileVit`] in eval mode → an ONNX graph: every BatchNorm folded into its conv, SiLU as
//! `x·Sigmoid(x)`, the MobileViT block's unfold/fold as Reshape + Transpose, attention as
//! MatMul + Softmax (q, k and v as three MatMuls: no Split, whose signature changed in opset 18),
//! LayerNormalization (opset 17), and timm's bilinear resize of odd maps as two MatMuls by
//! constant interpolation matrices (PyTorch's `align_corners=False`; ONNX's `Resize` would need
//! the batch in its `sizes`, which a runtime with a symbolic batch cannot always resolve).

use burn::prelude::*;
use exvit_layers::resize::bilinear_matrix;
use exvit_layers::{
    Act, Attention, BottleneckBlock, Conv2d, ConvNormAct, LayerNorm, Linear, MobileVitBlock, TransformerBlock,
    TypedLayer,
};
use exvit_zoo::{MobileVit, StageBlock};

use crate::graph::{transposed, Attr, Dim, Graph};
use crate::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::ExportError;

/// The opsets an export can target: 17 (LayerNormalization) to 21.
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// What [`export`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Input `[height, width]` (the graph's spatial size is fixed: the MobileViT blocks' patch
    /// grids depend on it).
    pub size: [usize; 2],
    /// A symbolic batch dimension `batch` instead of batch 1.
    pub dynamic_batch: bool,
    /// The ONNX opset ([`OPSETS`]).
    pub opset: i64,
    /// Also output every stage's map (`stages.N`), each ExShortcut's pooled vector
    /// (`exshortcuts.K`) and the classifier's input (`pooled`).
    pub taps: bool,
    /// The model's name, for the graph and its metadata.
    pub model_name: String,
}

impl ExportOptions {
    /// `size`x`size`, batch 1, opset 17, logits only.
    pub fn new(model_name: &str, size: usize) -> Self {
        Self { size: [size, size], dynamic_batch: false, opset: 17, taps: false, model_name: model_name.to_string() }
    }
}

/// The ONNX IR version that goes with an opset (onnx/helper.py's `VERSION_TABLE`).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 values")
}

/// A value in the graph with its per-image shape `[C, H, W]`.
#[derive(Clone)]
struct Map {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

struct Exporter {
    g: Graph,
    batch: Dim,
}

impl Exporter {
    /// `conv(x)·scale + shift` with the scale and shift folded into the conv (`scale`, `shift`:
    /// an eval-mode BatchNorm's), or the plain conv.
    fn conv<B: Backend>(
        &mut self,
        x: &Map,
        conv: &Conv2d<B>,
        bn: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
        name: &str,
    ) -> Map {
        let (k, s, p, groups) = (conv.kernel_size(), conv.stride(), conv.padding(), conv.groups());
        let (o, i) = (conv.out_channels(), conv.in_channels() / groups);
        let mut w = values(conv.weight.val());
        let mut b = conv.bias.as_ref().map(|b| values(b.val()));
        if let Some((scale, shift)) = bn {
            let (scale, shift) = (values(scale), values(shift));
            let per = w.len() / o;
            for (oc, chunk) in w.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= scale[oc]);
            }
            b = Some(match b {
                Some(b) => b.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect(),
                None => shift,
            });
        }
        let wn = self.g.weight(&format!("{name}.weight"), &[o, i, k, k], &w);
        let mut inputs = vec![x.name.clone(), wn];
        if let Some(b) = b {
            inputs.push(self.g.weight(&format!("{name}.bias"), &[o], &b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let (k, s, p) = (k as i64, s as i64, p as i64);
        let y = self.g.node(
            "Conv",
            &inputs,
            &format!("{name}/"),
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(groups as i64)),
            ],
        );
        Map { name: y, c: o, h: conv.output_size(x.h), w: conv.output_size(x.w) }
    }

    /// timm's `ConvNormAct` in eval mode: one conv (BN folded), then the activation.
    fn conv_norm_act<B: Backend>(&mut self, x: &Map, m: &ConvNormAct<B>, name: &str) -> Map {
        let y = self.conv(x, &m.conv, Some(m.bn.folded()), name);
        self.act(y, m.act(), name)
    }

    fn act(&mut self, y: Map, act: Act, name: &str) -> Map {
        match act {
            Act::Silu => Map { name: self.g.silu(&y.name, name), ..y },
            Act::Identity => y,
        }
    }

    fn bottleneck<B: Backend>(&mut self, x: &Map, m: &BottleneckBlock<B>, name: &str) -> Map {
        let y = self.conv_norm_act(x, &m.conv1_1x1, &format!("{name}.conv1_1x1"));
        let y = self.conv_norm_act(&y, &m.conv2_kxk, &format!("{name}.conv2_kxk"));
        let y = self.conv_norm_act(&y, &m.conv3_1x1, &format!("{name}.conv3_1x1"));
        if m.has_shortcut() {
            Map { name: self.g.binary("Add", &y.name, &x.name, name), ..y }
        } else {
            y
        }
    }

    fn layer_norm<B: Backend>(&mut self, x: &str, m: &LayerNorm<B>, name: &str) -> String {
        let d = m.in_channels();
        let w = self.g.weight(&format!("{name}.weight"), &[d], &values(m.weight.val()));
        let b = self.g.weight(&format!("{name}.bias"), &[d], &values(m.bias.val()));
        self.g.node(
            "LayerNormalization",
            &[x, &w, &b],
            &format!("{name}/"),
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(m.eps() as f32))],
        )
    }

    fn linear<B: Backend>(&mut self, x: &str, m: &Linear<B>, name: &str) -> String {
        let (o, i) = (m.out_channels(), m.in_channels());
        let bias = m.bias.as_ref().map(|b| values(b.val()));
        self.g.linear(x, name, &values(m.weight.val()), bias.as_deref(), [o, i])
    }

    /// timm's `Attention` over `[S, N, D]` tokens.
    fn attention<B: Backend>(&mut self, x: &str, m: &Attention<B>, n: usize, name: &str) -> String {
        let (d, heads) = (m.in_channels(), m.num_heads());
        let hd = d / heads;
        let w = values(m.qkv.weight.val());
        let b = m.qkv.bias.as_ref().map(|b| values(b.val()));
        // qkv's rows are [3, heads, head_dim]: q, k and v are its thirds.
        let part =
            |j: usize| (w[j * d * d..(j + 1) * d * d].to_vec(), b.as_ref().map(|b| b[j * d..(j + 1) * d].to_vec()));
        let mut qkv = Vec::new();
        for (j, (perm, tag)) in
            [([0i64, 2, 1, 3], "q"), ([0, 2, 3, 1], "k"), ([0, 2, 1, 3], "v")].into_iter().enumerate()
        {
            let (wj, bj) = part(j);
            let scope = format!("{name}.qkv.{tag}");
            let y = self.g.linear(x, &scope, &wj, bj.as_deref(), [d, d]);
            let y = self.g.reshape(&y, &[-1, n as i64, heads as i64, hd as i64], &scope);
            qkv.push(self.g.transpose(&y, &perm, &scope));
        }
        let scale = self.g.scalar(name, (hd as f32).powf(-0.5));
        let q = self.g.binary("Mul", &qkv[0], &scale, name);
        let scores = self.g.binary("MatMul", &q, &qkv[1], name);
        let probs = self.g.node("Softmax", &[&scores], &format!("{name}/"), vec![("axis", Attr::Int(-1))]);
        let y = self.g.binary("MatMul", &probs, &qkv[2], name);
        let y = self.g.transpose(&y, &[0, 2, 1, 3], name);
        let y = self.g.reshape(&y, &[-1, n as i64, d as i64], name);
        self.linear(&y, &m.proj, &format!("{name}.proj"))
    }

    fn transformer_block<B: Backend>(&mut self, x: &str, m: &TransformerBlock<B>, n: usize, name: &str) -> String {
        let y = self.layer_norm(x, &m.norm1, &format!("{name}.norm1"));
        let y = self.attention(&y, &m.attn, n, &format!("{name}.attn"));
        let x = self.g.binary("Add", x, &y, name);
        let y = self.layer_norm(&x, &m.norm2, &format!("{name}.norm2"));
        let y = self.linear(&y, &m.mlp.fc1, &format!("{name}.mlp.fc1"));
        let y = self.g.silu(&y, &format!("{name}.mlp"));
        let y = self.linear(&y, &m.mlp.fc2, &format!("{name}.mlp.fc2"));
        self.g.binary("Add", &x, &y, name)
    }

    /// Bilinear resize of `x` (`[B, C, from_h, from_w]`) to `[h, w]`, PyTorch's
    /// `align_corners=False`, as exvit computes it: `R_h · x · R_wᵀ` with constant
    /// interpolation matrices (`exvit_layers::resize::bilinear_matrix`). Two MatMuls, no Shape or
    /// Resize: a symbolic batch stays symbolic in every runtime.
    fn resize(&mut self, x: &str, [from_h, from_w]: [usize; 2], [h, w]: [usize; 2], name: &str) -> String {
        let mut y = x.to_string();
        if h != from_h {
            let rh = self.g.weight(&format!("{name}.resize_h"), &[h, from_h], &bilinear_matrix(from_h, h));
            y = self.g.binary("MatMul", &rh, &y, name);
        }
        if w != from_w {
            let rw = transposed(&bilinear_matrix(from_w, w), w, from_w);
            let rw = self.g.weight(&format!("{name}.resize_w"), &[from_w, w], &rw);
            y = self.g.binary("MatMul", &y, &rw, name);
        }
        y
    }

    fn mobilevit_block<B: Backend>(&mut self, x: &Map, m: &MobileVitBlock<B>, name: &str) -> Map {
        let y = self.conv_norm_act(x, &m.conv_kxk, &format!("{name}.conv_kxk"));
        let y = self.conv(&y, &m.conv_1x1, None, &format!("{name}.conv_1x1"));
        let (d, h, w, p) = (y.c, y.h, y.w, m.patch_size());
        let (nh, nw) = (h.div_ceil(p), w.div_ceil(p));
        let aligned = [nh * p, nw * p];
        let mut t = y.name.clone();
        if aligned != [h, w] {
            t = self.resize(&t, [h, w], aligned, &format!("{name}.unfold"));
        }
        let (nh_, nw_, p_, d_) = (nh as i64, nw as i64, p as i64, d as i64);
        let scope = format!("{name}.unfold");
        // [B, C, nh, ph, nw, pw] → [B, ph, pw, nh, nw, C] → [B·P, N, C]
        t = self.g.reshape(&t, &[-1, d_, nh_, p_, nw_, p_], &scope);
        t = self.g.transpose(&t, &[0, 3, 5, 2, 4, 1], &scope);
        t = self.g.reshape(&t, &[-1, nh_ * nw_, d_], &scope);
        for (k, blk) in m.transformer.iter().enumerate() {
            t = self.transformer_block(&t, blk, nh * nw, &format!("{name}.transformer.{k}"));
        }
        t = self.layer_norm(&t, &m.norm, &format!("{name}.norm"));
        let scope = format!("{name}.fold");
        t = self.g.reshape(&t, &[-1, p_, p_, nh_, nw_, d_], &scope);
        t = self.g.transpose(&t, &[0, 5, 3, 1, 4, 2], &scope);
        t = self.g.reshape(&t, &[-1, d_, nh_ * p_, nw_ * p_], &scope);
        if aligned != [h, w] {
            t = self.resize(&t, aligned, [h, w], &scope);
        }
        let y = self.conv_norm_act(&Map { name: t, c: d, h, w }, &m.conv_proj, &format!("{name}.conv_proj"));
        let cat = self.g.node("Concat", &[&x.name, &y.name], &format!("{name}/"), vec![("axis", Attr::Int(1))]);
        let cat = Map { name: cat, c: x.c + y.c, h, w };
        self.conv_norm_act(&cat, &m.conv_fusion, &format!("{name}.conv_fusion"))
    }

    /// Global average pool then flatten: `[B, C, H, W]` → `[B, C]`.
    fn pool(&mut self, x: &Map, name: &str) -> String {
        let y = self.g.node("GlobalAveragePool", &[&x.name], &format!("{name}/"), vec![]);
        self.g.node("Flatten", &[&y], &format!("{name}/"), vec![("axis", Attr::Int(1))])
    }

    fn dims(&self, rest: &[usize]) -> Vec<Dim> {
        std::iter::once(self.batch.clone()).chain(rest.iter().map(|&d| Dim::Fixed(d))).collect()
    }
}

/// `model` (eval mode, BatchNorms folded) as an ONNX model: input `input` `[batch, 3, H, W]`
/// (float, the model's preprocessing already applied), output `logits` `[batch, classes]`
/// (and with [`ExportOptions::taps`] the stages, ExShortcuts and `pooled`).
///
/// # Example
/// ```
/// use burn_flex::{Flex, FlexDevice};
/// use exvit_onnx::{export, ExportOptions};
/// use exvit_zoo::{load_model, ModelWeights};
///
/// let model = load_model::<Flex>("exmobilevit_xxs", ModelWeights::Init { seed: 0 }, 10, &FlexDevice).unwrap();
/// let onnx = export(&model, &ExportOptions::new("exmobilevit_xxs", 64)).unwrap();
/// assert_eq!(onnx.graph.unwrap().output[0].name, "logits");
/// ```
pub fn export<B: Backend>(model: &MobileVit<B>, opts: &ExportOptions) -> Result<ModelProto, ExportError> {
    if !OPSETS.contains(&opts.opset) {
        return Err(ExportError::Options(format!(
            "opset {} is not supported (LayerNormalization needs 17; exvit exports {}..={})",
            opts.opset,
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let [h, w] = opts.size;
    if h < 32 || w < 32 {
        return Err(ExportError::Options(format!("the input is {h}x{w}; MobileViT needs at least 32x32")));
    }
    let batch = if opts.dynamic_batch { Dim::Symbol("batch".into()) } else { Dim::Fixed(1) };
    let mut e = Exporter { g: Graph::default(), batch };
    let dims = e.dims(&[3, h, w]);
    let input = e.g.input("input", &dims);
    let mut x = e.conv_norm_act(&Map { name: input, c: 3, h, w }, &model.stem, "stem");
    let mut stages = Vec::new();
    for (s, blocks) in model.stages.iter().enumerate() {
        for (b, block) in blocks.iter().enumerate() {
            let name = format!("stages.{s}.{b}");
            x = match block {
                StageBlock::Bottleneck(m) => e.bottleneck(&x, m, &name),
                StageBlock::MobileVit(m) => e.mobilevit_block(&x, m, &name),
            };
        }
        stages.push(x.clone());
    }
    let fc = e.conv_norm_act(&x, &model.final_conv, "final_conv");
    let mut parts = Vec::new();
    for (k, (tap, &s)) in model.exshortcuts.iter().zip(model.exshortcut_stages()).enumerate() {
        let name = format!("exshortcuts.{k}");
        let y = e.conv(&stages[s], &tap.conv, Some(tap.bn.folded()), &name);
        let y = e.act(y, Act::Silu, &name);
        let c = y.c;
        parts.push((e.pool(&y, &name), c));
    }
    parts.push((e.pool(&fc, "final_conv"), fc.c));
    let pooled = if parts.len() == 1 {
        parts[0].0.clone()
    } else {
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        e.g.node("Concat", &names, "head/", vec![("axis", Attr::Int(1))])
    };
    let logits = e.linear(&pooled, &model.head.fc, "head.fc");
    let classes = model.num_classes();
    let dims = e.dims(&[classes]);
    e.g.output(&logits, "logits", &dims);
    if opts.taps {
        for (s, m) in stages.iter().enumerate() {
            let dims = e.dims(&[m.c, m.h, m.w]);
            e.g.output(&m.name, &format!("stages.{s}"), &dims);
        }
        for (k, (name, c)) in parts[..parts.len() - 1].iter().enumerate() {
            let dims = e.dims(&[*c]);
            e.g.output(name, &format!("exshortcuts.{k}"), &dims);
        }
        let width = parts.iter().map(|(_, c)| c).sum::<usize>();
        let dims = e.dims(&[width]);
        e.g.output(&pooled, "pooled", &dims);
    }
    let doc = format!(
        "{} exported by exvit {} (eval mode, BatchNorm folded): input `input` [batch, 3, {h}, {w}] float \
         (preprocessed as the model's pretrained config says), output `logits` [batch, {classes}]",
        opts.model_name,
        env!("CARGO_PKG_VERSION")
    );
    let meta = |k: &str, v: String| StringStringEntryProto { key: k.to_string(), value: v };
    Ok(ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opts.opset }],
        producer_name: "exvit".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        domain: String::new(),
        model_version: 1,
        doc_string: doc.clone(),
        graph: Some(e.g.finish(&opts.model_name, &doc)),
        metadata_props: vec![meta("model", opts.model_name.clone()), meta("input_size", format!("{h}x{w}"))],
    })
}
