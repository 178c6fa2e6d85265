//! One GPU: its context, the (non-default) stream all work is ordered on, the cuBLAS handle bound to that
//! stream, and the kernel functions compiled by NVRTC once at start-up for the device's
//! compute capability.
//!
//! Invariants: every launch and copy goes to `stream`; functions are looked up by the names
//! listed in `kernels::SOURCES`, all of which are loaded in [`GpuDevice::new`] (a missing one
//! is a start-up error, never a launch-time surprise).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr};

use super::{cuda_available, kernels, CudaError, Result};

pub struct GpuDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    /// Compute capability `(major, minor)` and the NVRTC arch the kernels were built for.
    pub cc: (i32, i32),
    pub arch: &'static str,
    /// Multiprocessors (the attention launcher sizes its partitions by them).
    pub sms: usize,
    funcs: HashMap<&'static str, CudaFunction>,
}

impl GpuDevice {
    /// Opens device `ordinal`, compiles and loads every kernel. Errors (never panics) when
    /// there is no driver, no such device, no libnvrtc/libcublas, or a kernel fails to build.
    pub fn new(ordinal: usize) -> Result<Self> {
        let n = cuda_available().map_err(CudaError::Unavailable)?;
        if ordinal >= n {
            return Err(CudaError::Config(format!(
                "CUDA device {ordinal} requested, {n} present"
            )));
        }
        if !kernels::nvrtc_present() {
            return Err(CudaError::Unavailable(
                "libnvrtc was not found (needed to compile the kernels)".into(),
            ));
        }
        // SAFETY: only dlopens candidate names of libcublas; calls no symbol.
        let blas_ok =
            std::panic::catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() })
                .unwrap_or(false);
        if !blas_ok {
            return Err(CudaError::Unavailable("libcublas was not found".into()));
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: every buffer of this device is used on `stream` alone, so cudarc's
        // cross-stream event tracking has nothing to order; it is off before any buffer
        // exists, so no buffer records events (a launch then costs no event calls).
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        let cc = ctx.compute_capability()?;
        let arch = kernels::arch_name(cc.0, cc.1);
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )?
            .max(1) as usize;
        let mut funcs = HashMap::new();
        for (name, src, entries) in kernels::SOURCES {
            let ptx = kernels::compile(name, src, arch).map_err(CudaError::Compile)?;
            let module = ctx.load_module(ptx)?;
            for e in *entries {
                funcs.insert(*e, module.load_function(e)?);
            }
        }
        Ok(GpuDevice {
            ctx,
            stream,
            blas,
            cc,
            arch,
            sms,
            funcs,
        })
    }

    /// The kernel `name` (one of the entry points in `kernels::SOURCES`).
    pub fn func(&self, name: &str) -> &CudaFunction {
        self.funcs
            .get(name)
            .unwrap_or_else(|| panic!("kernel `{name}` is not in kernels::SOURCES"))
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copies a device buffer back (synchronizes the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// `(free, total)` bytes of device memory.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        Ok(self.ctx.mem_get_info()?)
    }

    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
