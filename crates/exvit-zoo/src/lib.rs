//! The exvit model zoo: MobileViT and ExMobileViT, built from a config table by one generic
//! builder, with timm's module names (so timm `state_dict` keys are our parameter paths).
//!
//! - [`registry`]: timm's model names ([`model_names`], [`resolve_model`]: a name or a TOML
//!   variant → a [`MobileVitConfig`]);
//! - [`MobileVitConfig::init`]: the one builder; [`MobileVit::forward`] (logits),
//!   [`MobileVit::forward_all`] (every stage and ExShortcut), [`MobileVit::forward_taps`];
//! - [`load_model`]: a name plus [`ModelWeights`] (random init, a timm-keyed safetensors file,
//!   or a backbone) → a ready model; [`save_safetensors`] writes weights timm loads;
//! - [`macs::count_macs`]: multiply-accumulates of a forward pass at an input size (what
//!   PyTorch's `FlopCounterMode` counts, halved);
//! - [`hub`]: a model's pretrained weights from the Hugging Face cache timm uses (or a
//!   download into it, feature `download`);
//! - [`PretrainedCfg`]: the preprocessing the weights expect (exvit-data's
//!   `preprocess::DataConfig::timm` turns it into a transform).
//!
//! # The backend
//! Everything is generic over a burn [`Backend`](burn::prelude::Backend). On the CPU use
//! burn-flex **with its `rayon` and `simd` features** (exvit's fused kernels are written for
//! it); without them burn-flex computes on one thread, several times slower:
//!
//! ```toml
//! [dependencies]
//! exvit-zoo = "0.1"
//! burn = { version = "=0.21.0", default-features = false, features = ["std"] }
//! burn-flex = { version = "=0.21.0", features = ["rayon", "simd"] }
//! ```
//!
//! # Example
//! ```
//! use burn::prelude::*;
//! use burn_flex::{Flex, FlexDevice};
//! use exvit_zoo::{load_model, ModelWeights};
//!
//! let dev = FlexDevice;
//! let model = load_model::<Flex>("exmobilevit_xxs", ModelWeights::Init { seed: 0 }, 10, &dev).unwrap();
//! let x = Tensor::<Flex, 4>::zeros([1, 3, 64, 64], &dev);
//! let out = model.forward_all(x);
//! assert_eq!(out.logits.dims(), [1, 10]);
//! // timm's head input: the two ExShortcuts' pooled features, then final_conv's.
//! assert_eq!(out.pooled.dims()[1], out.exshortcuts.iter().map(|t| t.dims()[1]).sum::<usize>() + 320);
//! ```
//!
//! A whole program (a name, timm weights, one image preprocessed the weights' way, the top-5)
//! is `examples/classify.rs`: `cargo run --release -p exvit-zoo --example classify -- --help`.

pub mod hub;
pub mod load;
pub mod macs;
pub mod mobilevit;
pub mod refinit;
pub mod registry;
pub mod state;
pub mod weights;

pub use exvit_common::nonfinite::{NonFinite, NonFiniteCount};
pub use load::{classes_in_weights, load_model, load_model_with, LoadError, ModelWeights};
pub use mobilevit::{
    BlockAttention, ChannelOrder, ExShortcutSpec, InvalidConfig, MobileVit, MobileVitConfig, ModelOutputs,
    PretrainedCfg, StageBlock, StageConfig, TapOutput, TransformerConfig, UnknownTap,
};
pub use registry::{
    create_model, model_config, model_names, module_params, resolve_model, zoo_table, Entry, ZooError, ZooRow, REGISTRY,
};
pub use state::{
    count_params, flat_grads, flat_tensors, map_flat, named_grads, named_tensors, update_named, NamedTensor, TensorKind,
};
pub use weights::{
    load_safetensors, load_safetensors_with, save_safetensors, write_safetensors, LoadMode, LoadReport, Problem,
    RawTensor, WeightsError,
};
