//! Training precision: f32, or bf16 compute with f32 master weights.
//!
//! burn 0.21 has no autocast, so exvit builds one from two facts of its tensors: they carry
//! their dtype at run time, and `cast` is differentiable (its backward casts the gradient back
//! to the source dtype). Under [`Precision::Bf16`], each step takes a *compute view* of the
//! model: every parameter cast to bf16, except those of BatchNorm and LayerNorm (and their
//! running statistics), which stay f32 (those layers promote their input, see `exvit_layers::precision`, as does the
//! attention softmax). The images are cast to bf16, the logits back to f32 for the loss.
//! The backward then lands, through the casts, as f32 gradients on the f32 parameters — the
//! master weights — so AdamW's state, its update, the EMA and the BN running statistics stay
//! f32, as under `torch.autocast(dtype=torch.bfloat16)` with an f32 model.
//!
//! bf16 is offered where the backend computes in it: CUDA. burn-flex stores bf16 but computes
//! it through f32 (slower, for no gain), so the CLI refuses `--precision bf16` on the CPU; the
//! mechanism itself is tested on flex (`tests/precision.rs`), where bf16 rounding is real.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use exvit_layers::precision::in_dtype;
use serde::{Deserialize, Serialize};

/// The dtype a training step computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Convs, matmuls and activations in bf16; norms, softmax, loss, master weights, optimiser
    /// state and EMA in f32.
    Bf16,
}

impl Precision {
    /// The dtype of the compute view's convs and matmuls.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("precision `{other}`: expected f32 or bf16")),
        }
    }
}

/// Casts every float tensor outside BatchNorm / LayerNorm to `dtype`, through burn's
/// differentiable cast. The norms' parameters and running statistics (the only running state
/// in these models, shared with the master model) stay f32.
struct CastOutsideNorms {
    dtype: FloatDType,
    /// Depth inside normalisation layers (their parameters stay in the master dtype).
    in_norm: usize,
}

fn is_norm(container_type: &str) -> bool {
    matches!(container_type, "Struct:BatchNorm2d" | "Struct:LayerNorm")
}

impl<B: Backend> ModuleMapper<B> for CastOutsideNorms {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        if is_norm(container_type) {
            self.in_norm += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if is_norm(container_type) {
            self.in_norm -= 1;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.in_norm == 0 { tensor.cast(self.dtype) } else { tensor };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The model a step (or an evaluation) computes with under `precision`: `model` itself for
/// f32; for bf16 a view whose conv / linear weights are bf16 casts of `model`'s (on an autodiff
/// backend their gradients reach `model`'s f32 parameters through the casts).
pub fn compute_view<B: Backend, M: Module<B>>(model: &M, precision: Precision) -> M {
    match precision {
        Precision::F32 => model.clone(),
        Precision::Bf16 => cast_outside_norms(model, FloatDType::BF16),
    }
}

/// `model` with every float tensor outside BatchNorm / LayerNorm cast to `dtype`
/// (differentiably); what [`compute_view`] builds for bf16, for any float dtype.
pub fn cast_outside_norms<B: Backend, M: Module<B>>(model: &M, dtype: FloatDType) -> M {
    model.clone().map(&mut CastOutsideNorms { dtype, in_norm: 0 })
}

/// Images in the compute dtype of `precision`.
pub fn compute_input<B: Backend>(images: Tensor<B, 4>, precision: Precision) -> Tensor<B, 4> {
    match precision {
        Precision::F32 => images,
        Precision::Bf16 => images.cast(FloatDType::BF16),
    }
}

/// Logits back in f32 for the loss (as autocast computes cross entropy in f32).
pub fn loss_input<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    in_dtype(logits, DType::F32)
}
