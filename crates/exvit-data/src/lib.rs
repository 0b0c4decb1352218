//! exvit's data pipeline (part I): dataset sources with timm/torchvision class indices, robust
//! image decoding, and Parquet manifests. It knows nothing of models.

pub mod check;
pub mod classes;
pub mod decode;
pub mod error;
pub mod jpeg;
pub mod loader;
pub mod manifest;
pub mod matfile;
pub mod pack;
pub mod preprocess;
pub mod resize;
pub mod rng;
pub mod sampler;
pub mod source;
pub mod synthetic;
pub mod transform;

pub use check::{check_dataset, CheckOptions, CheckReport, OnBadImage, Record, Status};
pub use decode::{decode_rgb, sniff, DecodeError, Format, RgbImage, DEFAULT_MAX_PIXELS};
pub use jpeg::{decode_jpeg, decode_jpeg_into, jpeg_header, JpegColor, JpegHeader, Window};
pub use source::{
    devkit_id_to_label, discover, is_cifar_binary, open_cifar, open_path, open_split, parse_loc_val_solution,
    DataError, Dataset, Layout, Location, Sample,
};
