//! The exvit model zoo: MobileViT and ExMobileViT, built from a config table by one generic
//! builder, with timm's module names (so timm `state_dict` keys are our parameter paths).

pub mod mobilevit;
pub mod refinit;
pub mod registry;
pub mod state;
pub mod weights;

pub use mobilevit::{
    ChannelOrder, MobileVit, MobileVitConfig, ModelOutputs, PretrainedCfg, StageBlock, StageConfig, TapConfig,
    TapOutput, TransformerConfig, UnknownTap,
};
pub use registry::{
    create_model, model_config, model_names, module_params, resolve_model, zoo_table, Entry, ZooError, ZooRow, REGISTRY,
};
pub use state::{
    count_params, flat_grads, flat_tensors, map_flat, named_grads, named_tensors, update_named, NamedTensor, TensorKind,
};
pub use weights::{
    load_safetensors, save_safetensors, write_safetensors, LoadMode, LoadReport, Problem, RawTensor, WeightsError,
};
