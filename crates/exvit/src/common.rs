//! What several commands share: the device flag, opening a split, and the preprocessing flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use exvit_data::preprocess::{DataConfig, EvalOverrides};
use exvit_data::resize::Filter;
use exvit_data::Dataset;
use exvit_zoo::PretrainedCfg;

/// Where a command computes: `--device cpu` (burn's flex backend) or `--device cuda[:N]`
/// (burn's CUDA backend, with the `cuda` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

/// Parses `--device`, checking that a CUDA device can be created before burn tries (burn 0.21
/// panics without a driver): the driver library loads, `cuInit` succeeds, device N exists and
/// NVRTC loads.
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("--device {s}: expected cpu, cuda or cuda:N"))?,
        None => bail!("--device {s}: expected cpu, cuda or cuda:N"),
    };
    cuda_device(s, index)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(s: &str, _index: usize) -> Result<Device> {
    bail!("--device {s}: this exvit was built without the `cuda` feature; rebuild with `cargo build --release -p exvit --features cuda` (docs/gpu.md)")
}

#[cfg(feature = "cuda")]
fn cuda_device(s: &str, index: usize) -> Result<Device> {
    // SAFETY: these only try to dlopen the libraries (no symbol is called).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("--device {s}: the NVIDIA driver library (libcuda.so) cannot be loaded: no NVIDIA driver on this machine, or it is not on the library path");
    }
    cudarc::driver::result::init().map_err(|e| anyhow::anyhow!("--device {s}: cuInit failed: {e:?}"))?;
    let count =
        cudarc::driver::result::device::get_count().map_err(|e| anyhow::anyhow!("--device {s}: {e:?}"))? as usize;
    if index >= count {
        bail!("--device {s}: this machine has {count} CUDA device(s)");
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        bail!("--device {s}: NVRTC (libnvrtc.so) cannot be loaded: add the CUDA toolkit's lib64 folder to LD_LIBRARY_PATH");
    }
    Ok(Device::Cuda(index))
}

/// Refuses a precision the device does not compute in: bf16 needs CUDA (burn-flex stores bf16
/// but computes it through f32: slower, for nothing).
pub fn check_precision(device: Device, precision: exvit_train::Precision) -> Result<()> {
    if precision == exvit_train::Precision::Bf16 && device == Device::Cpu {
        bail!("--precision bf16 needs --device cuda: the CPU backend (burn-flex) computes bf16 through f32, so it would be slower and no more useful than f32");
    }
    Ok(())
}

/// Runs `$body` with `$B` the backend of `$device` and `$dev` its burn device.
#[macro_export]
macro_rules! with_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $device {
            $crate::common::Device::Cpu => {
                type $B = burn_flex::Flex;
                let $dev = burn_flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::common::Device::Cuda(i) => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice { index: i };
                $body
            }
        }
    };
}

/// A backend whose `Autodiff<B>` trains: any backend, or in a `ddp` build one with a collective
/// (burn's `distributed` feature asks `B: DistributedBackend` of `Autodiff<B>`).
#[cfg(not(feature = "ddp"))]
pub trait TrainBackend: burn::prelude::Backend {}
#[cfg(not(feature = "ddp"))]
impl<B: burn::prelude::Backend> TrainBackend for B {}
/// A backend whose `Autodiff<B>` trains: any backend, or in a `ddp` build one with a collective
/// (burn's `distributed` feature asks `B: DistributedBackend` of `Autodiff<B>`).
#[cfg(feature = "ddp")]
pub trait TrainBackend: burn::tensor::backend::distributed::DistributedBackend {}
#[cfg(feature = "ddp")]
impl<B: burn::tensor::backend::distributed::DistributedBackend> TrainBackend for B {}

/// [`with_backend!`] for work that trains (runs `Autodiff<$B>`). A `ddp` build cannot train on
/// the CPU (burn's distributed autodiff needs a backend with a collective, which burn-flex is
/// not), so there the CPU arm returns that error from the enclosing function.
#[cfg(not(feature = "ddp"))]
#[macro_export]
macro_rules! with_autodiff_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        $crate::with_backend!($device, |$B, $dev| $body)
    };
}

/// [`with_backend!`] for work that trains (runs `Autodiff<$B>`). A `ddp` build cannot train on
/// the CPU (burn's distributed autodiff needs a backend with a collective, which burn-flex is
/// not), so there the CPU arm returns that error from the enclosing function.
#[cfg(feature = "ddp")]
#[macro_export]
macro_rules! with_autodiff_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $device {
            $crate::common::Device::Cpu => return Err($crate::common::ddp_cpu_error()),
            $crate::common::Device::Cuda(i) => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice { index: i };
                $body
            }
        }
    };
}

/// Why a `ddp` build refuses to train on the CPU.
#[cfg(feature = "ddp")]
pub fn ddp_cpu_error() -> anyhow::Error {
    anyhow::anyhow!("this exvit was built with the `ddp` feature, which cannot train on the CPU (burn 0.21's distributed autodiff needs a GPU collective): use --device cuda, or a build without `ddp`")
}

/// Opens `data/split` when that folder exists, else `data` itself (a split folder, or a CIFAR
/// binary folder whose split `split` is read).
pub fn open_split(data: &Path, split: &str) -> Result<(PathBuf, Arc<Dataset>)> {
    let dir = if data.join(split).is_dir() { data.join(split) } else { data.to_path_buf() };
    let ds = exvit_data::open_path(&dir, split).with_context(|| format!("reading {}", dir.display()))?;
    Ok((dir, Arc::new(ds)))
}

/// Overrides of a model's pretrained eval preprocessing, shared by `exvit eval` and
/// `exvit probe extract`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Preprocessing {
    /// Input side (default: the model's pretrained config).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Crop fraction (default: the model's pretrained config).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// Interpolation (default: the model's pretrained config).
    #[arg(long)]
    pub interpolation: Option<Filter>,
}

impl Preprocessing {
    /// The model's eval preprocessing ([`DataConfig::from_pretrained`]) with these overrides.
    pub fn resolve(&self, pre: &PretrainedCfg) -> Result<DataConfig> {
        let overrides =
            EvalOverrides { resolution: self.resolution, crop_pct: self.crop_pct, interpolation: self.interpolation };
        Ok(DataConfig::from_pretrained(pre).context("the model's pretrained config")?.with(&overrides))
    }
}
