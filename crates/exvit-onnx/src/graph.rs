//! A small builder of ONNX graphs: named values, constant initializers, and one method per
//! operator the exporter uses, each documented with its ONNX semantics.

use crate::proto::{
    AttributeProto, AttributeType, DataType, Dimension, DimensionValue, GraphProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};

/// A dimension of a graph input or output: fixed, or named (symbolic, e.g. `batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size, by name.
    Symbol(String),
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
pub fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols, "transposed: {} values for a {rows}x{cols} matrix", m.len());
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// An ONNX graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimensionValue::DimValue(*n as i64),
                Dim::Symbol(s) => DimensionValue::DimParam(s.clone()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: String::new(),
    }
}

/// An attribute of a node.
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f32),
    /// `INTS`.
    Ints(Vec<i64>),
}

impl Graph {
    /// A float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, dims));
        name.to_string()
    }

    /// Declares `value` a float graph output named `name` (through an Identity when the value
    /// has another name).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            self.node("Identity", &[value], name, vec![]);
        }
        self.outputs.push(value_info(name, dims));
    }

    /// A fresh value name under `prefix`.
    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}/{}", self.counter)
    }

    /// A float initializer `name` of shape `dims`.
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "initializer {name}: shape and values differ");
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: name.to_string(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// An int64 initializer (shapes, axes, sizes).
    pub fn ints(&mut self, prefix: &str, values: &[i64]) -> String {
        let name = self.fresh(&format!("{prefix}/const"));
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A float scalar initializer.
    pub fn scalar(&mut self, prefix: &str, value: f32) -> String {
        let name = self.fresh(&format!("{prefix}/const"));
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: DataType::Float as i32,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
            ..Default::default()
        });
        name
    }

    /// A node `op` with `inputs` and one output named `out` (made unique under it when it
    /// ends with `/`).
    pub fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<(&str, Attr)>) -> String {
        let out = if out.ends_with('/') { self.fresh(&format!("{out}{op}")) } else { out.to_string() };
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
                match a {
                    Attr::Int(i) => {
                        p.i = i;
                        p.r#type = AttributeType::Int as i32;
                    }
                    Attr::Float(f) => {
                        p.f = f;
                        p.r#type = AttributeType::Float as i32;
                    }
                    Attr::Ints(v) => {
                        p.ints = v;
                        p.r#type = AttributeType::Ints as i32;
                    }
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        out
    }

    /// `Reshape(x, shape)`: `shape` may hold one `-1` (inferred) and `0`s (copied).
    pub fn reshape(&mut self, x: &str, shape: &[i64], scope: &str) -> String {
        let s = self.ints(scope, shape);
        self.node("Reshape", &[x, &s], &format!("{scope}/"), vec![])
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64], scope: &str) -> String {
        self.node("Transpose", &[x], &format!("{scope}/"), vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&mut self, x: &str, scope: &str) -> String {
        let s = self.node("Sigmoid", &[x], &format!("{scope}/"), vec![]);
        self.node("Mul", &[x, &s], &format!("{scope}/"), vec![])
    }

    /// A binary elementwise op (`Add`, `Mul`) with broadcasting.
    pub fn binary(&mut self, op: &str, a: &str, b: &str, scope: &str) -> String {
        self.node(op, &[a, b], &format!("{scope}/"), vec![])
    }

    /// `x @ weightᵀ + bias` over the last axis (`weight`: PyTorch's `[out, in]`, stored here
    /// transposed as `[in, out]` for `MatMul`).
    pub fn linear(
        &mut self,
        x: &str,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        [d_out, d_in]: [usize; 2],
    ) -> String {
        let w = self.weight(&format!("{name}.weight"), &[d_in, d_out], &transposed(weight, d_out, d_in));
        let y = self.node("MatMul", &[x, &w], &format!("{name}/"), vec![]);
        match bias {
            Some(b) => {
                let b = self.weight(&format!("{name}.bias"), &[d_out], b);
                self.node("Add", &[&y, &b], &format!("{name}/"), vec![])
            }
            None => y,
        }
    }

    /// The finished graph.
    pub fn finish(self, name: &str, doc: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.to_string(),
            initializer: self.initializers,
            doc_string: doc.to_string(),
            input: self.inputs,
            output: self.outputs,
            value_info: vec![],
        }
    }
}
