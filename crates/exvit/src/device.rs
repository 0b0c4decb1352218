//! `--device`: where a command computes, and the checks that run before burn creates a device.
//!
//! burn 0.21 creates a GPU device on its own thread and panics there when the driver is missing
//! (the caller then fails with an unrelated `RecvError`, or not at all). exvit checks first and
//! stops with one line that names what to install.

use anyhow::{bail, Context, Result};

/// Where a command computes: `--device cpu` (burn's flex backend), `--device cuda[:N]` (burn's
/// CUDA backend, with the `cuda` feature) or `--device wgpu[:N]` (burn's wgpu backend on Vulkan
/// with the SPIR-V compiler, with the `wgpu` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    #[cfg(feature = "cuda")]
    Cuda(usize),
    /// A Vulkan adapter.
    #[cfg(feature = "wgpu")]
    Wgpu(WgpuPick),
}

/// Which Vulkan adapter `--device wgpu[:N]` names, in the terms of burn's `WgpuDevice` (cubecl
/// numbers adapters within their type).
#[cfg(feature = "wgpu")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuPick {
    /// `wgpu`: the adapter wgpu prefers (a discrete GPU over an integrated one over a CPU).
    Default,
    /// The N-th discrete GPU.
    Discrete(usize),
    /// The N-th integrated GPU.
    Integrated(usize),
    /// The N-th virtual GPU.
    Virtual(usize),
    /// A CPU driver (lavapipe).
    Cpu,
}

#[cfg(feature = "wgpu")]
impl WgpuPick {
    /// burn's device for this adapter.
    pub fn burn_device(self) -> burn::backend::wgpu::WgpuDevice {
        use burn::backend::wgpu::WgpuDevice;
        match self {
            WgpuPick::Default => WgpuDevice::DefaultDevice,
            WgpuPick::Discrete(i) => WgpuDevice::DiscreteGpu(i),
            WgpuPick::Integrated(i) => WgpuDevice::IntegratedGpu(i),
            WgpuPick::Virtual(i) => WgpuDevice::VirtualGpu(i),
            WgpuPick::Cpu => WgpuDevice::Cpu,
        }
    }
}

const EXPECTED: &str = "expected cpu, cuda, cuda:N, wgpu or wgpu:N";

/// Parses `--device`, checking that the device can be created before burn tries.
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let (backend, index) = match s.split_once(':') {
        Some((b, n)) => (b, Some(n.parse::<usize>().with_context(|| format!("--device {s}: {EXPECTED}"))?)),
        None => (s, None),
    };
    match backend {
        "cuda" => cuda_device(s, index.unwrap_or(0)),
        "wgpu" => wgpu_device(s, index),
        _ => bail!("--device {s}: {EXPECTED}"),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(s: &str, _index: usize) -> Result<Device> {
    bail!("--device {s}: this exvit was built without the `cuda` feature; rebuild with `cargo build --release -p exvit --features cuda` (docs/gpu.md)")
}

/// The driver library loads, `cuInit` succeeds, device N exists and NVRTC loads.
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

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(s: &str, _index: Option<usize>) -> Result<Device> {
    bail!("--device {s}: this exvit was built without the `wgpu` feature; rebuild with `cargo build --release -p exvit --features wgpu` (docs/gpu.md)")
}

/// A Vulkan loader and driver exist, and adapter N (in wgpu's order) when one is named.
#[cfg(feature = "wgpu")]
fn wgpu_device(s: &str, index: Option<usize>) -> Result<Device> {
    let adapters = vulkan_adapters().map_err(|why| anyhow::anyhow!("--device {s}: {why}"))?;
    let listed = || {
        adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("wgpu:{i} {} ({:?})", a.name, a.device_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pick = match index {
        None => WgpuPick::Default,
        Some(n) => {
            let Some(info) = adapters.get(n) else {
                bail!("--device {s}: this machine has {} Vulkan adapter(s): {}", adapters.len(), listed());
            };
            let same = adapters[..n].iter().filter(|a| a.device_type == info.device_type).count();
            match info.device_type {
                wgpu::DeviceType::DiscreteGpu => WgpuPick::Discrete(same),
                wgpu::DeviceType::IntegratedGpu => WgpuPick::Integrated(same),
                wgpu::DeviceType::VirtualGpu => WgpuPick::Virtual(same),
                wgpu::DeviceType::Cpu if same == 0 => WgpuPick::Cpu,
                wgpu::DeviceType::Cpu => bail!("--device {s}: burn 0.21 reaches only the first CPU Vulkan driver; adapters: {}", listed()),
                wgpu::DeviceType::Other => bail!("--device {s}: adapter {n} is of an unknown type, which burn 0.21 cannot select by index; use --device wgpu (adapters: {})", listed()),
            }
        }
    };
    tracing::info!(adapters = %listed(), ?pick, "Vulkan");
    Ok(Device::Wgpu(pick))
}

/// The Vulkan adapters wgpu sees, in its order; or why there are none, naming what to install.
#[cfg(feature = "wgpu")]
pub fn vulkan_adapters() -> std::result::Result<Vec<wgpu::AdapterInfo>, String> {
    #[cfg(target_os = "linux")]
    {
        // Without the loader wgpu just lists no adapter: say which of the two is missing.
        // SAFETY: dlopen of a library by name, closed at once; no symbol is called.
        let handle = unsafe { libc::dlopen(c"libvulkan.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err("no Vulkan loader (libvulkan.so.1 cannot be loaded): install it and a driver, e.g. `apt-get install libvulkan1 mesa-vulkan-drivers` on Debian (mesa's lavapipe runs on the CPU), or your GPU vendor's driver".into());
        }
        // SAFETY: the handle dlopen returned.
        unsafe { libc::dlclose(handle) };
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        // No debug messenger: a missing driver is said once, below, not also as the loader's
        // own ERROR lines.
        flags: wgpu::InstanceFlags::empty(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters: Vec<_> =
        block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN)).iter().map(|a| a.get_info()).collect();
    if adapters.is_empty() {
        return Err("the Vulkan loader is installed but finds no driver (no adapter): install one, e.g. `apt-get install mesa-vulkan-drivers` on Debian (lavapipe, a CPU driver), or your GPU vendor's; `vulkaninfo --summary` lists what Vulkan sees".into());
    }
    Ok(adapters)
}

/// Polls a future that native wgpu completes at once.
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Refuses a training precision the device does not compute in. bf16 needs CUDA: burn-flex
/// stores bf16 but computes it through f32 (slower, for nothing), and on wgpu burn 0.21's WGSL
/// compiler computes bf16 wrong without an error, while its SPIR-V compiler (the one exvit
/// builds) has no bf16.
pub fn check_precision(device: Device, precision: exvit_train::Precision) -> Result<()> {
    if precision == exvit_train::Precision::F32 {
        return Ok(());
    }
    match device {
        Device::Cpu => bail!("--precision bf16 needs --device cuda: the CPU backend (burn-flex) computes bf16 through f32, so it would be slower and no more useful than f32"),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => Ok(()),
        #[cfg(feature = "wgpu")]
        Device::Wgpu(_) => bail!("--precision bf16 needs --device cuda: burn 0.21's wgpu backend has no correct bf16 (its WGSL compiler computes it wrong with no error; the SPIR-V compiler this build uses rejects it); use f32 on wgpu"),
    }
}

/// Runs `$body` with `$B` the backend of `$device` and `$dev` its burn device.
#[macro_export]
macro_rules! with_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $device {
            $crate::device::Device::Cpu => {
                type $B = burn_flex::Flex;
                let $dev = burn_flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::Device::Cuda(i) => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice { index: i };
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::Device::Wgpu(pick) => {
                type $B = burn::backend::Vulkan;
                let $dev = pick.burn_device();
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

/// [`with_backend!`] for work that trains (runs `Autodiff<$B>`). A `ddp` build trains on CUDA
/// only (burn's distributed autodiff needs a backend with a collective, which burn-flex and
/// wgpu are not), so there the other arms return that error from the enclosing function.
#[cfg(not(feature = "ddp"))]
#[macro_export]
macro_rules! with_autodiff_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        $crate::with_backend!($device, |$B, $dev| $body)
    };
}

/// [`with_backend!`] for work that trains (runs `Autodiff<$B>`). A `ddp` build trains on CUDA
/// only (burn's distributed autodiff needs a backend with a collective, which burn-flex and
/// wgpu are not), so there the other arms return that error from the enclosing function.
#[cfg(feature = "ddp")]
#[macro_export]
macro_rules! with_autodiff_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $device {
            $crate::device::Device::Cuda(i) => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice { index: i };
                $body
            }
            #[allow(unreachable_patterns)]
            _ => return Err($crate::device::ddp_cpu_error()),
        }
    };
}

/// Why a `ddp` build refuses to train off CUDA.
#[cfg(feature = "ddp")]
pub fn ddp_cpu_error() -> anyhow::Error {
    anyhow::anyhow!("this exvit was built with the `ddp` feature, which trains on CUDA only (burn 0.21's distributed autodiff needs a GPU collective): use --device cuda, or a build without `ddp`")
}
