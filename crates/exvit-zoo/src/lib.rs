//! The exvit model zoo: MobileViT and ExMobileViT, built from a config table by one generic
//! builder, with timm's module names (so timm `state_dict` keys are our parameter paths).

pub mod mobilevit;
pub mod refinit;
pub mod registry;
pub mod state;

pub use mobilevit::{MobileVit, MobileVitConfig, ModelOutputs, StageBlock, StageConfig, TapConfig, TransformerConfig};
pub use registry::{create_model, model_config, model_names, ZooError};
pub use state::{count_params, named_tensors, update_named, NamedTensor, TensorKind};
