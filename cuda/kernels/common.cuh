// Shared helpers of the CUDA implementation: errors, launch checks, bf16 conversion, warp reductions.
#pragma once
#include <atomic>
#include <cstdlib>
#include <utility>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include "../include/msgl.h"

namespace msgl {

int fail(int code, const char* message);

// Checks the launch that just happened (bad configuration, missing kernel image for this GPU, ...).
int launched(const char* op);

inline cudaStream_t as_stream(msgl_stream s) { return static_cast<cudaStream_t>(s); }

__device__ __forceinline__ float to_f32(msgl_bf16 b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
// Round to nearest even, like the CPU library's f32_to_bf16.
__device__ __forceinline__ msgl_bf16 to_bf16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
__device__ __forceinline__ float round_bf16(float f) { return to_f32(to_bf16(f)); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.f;
  return warp_sum(v);
}

// SM count, opt-in shared memory per block and compute capability (major) of the current device, queried
// once per device.
struct DeviceInfo {
  int id, sms, smem_optin, major;
};
constexpr int kMaxDevices = 64;

inline cudaError_t device_info(DeviceInfo& d) {
  static std::atomic<int> sms[kMaxDevices], smem[kMaxDevices], major[kMaxDevices];
  cudaError_t e = cudaGetDevice(&d.id);
  if (e != cudaSuccess) return e;
  if (d.id < 0 || d.id >= kMaxDevices) return cudaErrorInvalidDevice;
  d.sms = sms[d.id].load(std::memory_order_acquire);
  if (d.sms > 0) {
    d.smem_optin = smem[d.id].load(std::memory_order_relaxed);
    d.major = major[d.id].load(std::memory_order_relaxed);
    return cudaSuccess;
  }
  if ((e = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, d.id)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.id)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d.id)) != cudaSuccess)
    return e;
  smem[d.id].store(d.smem_optin, std::memory_order_relaxed);
  major[d.id].store(d.major, std::memory_order_relaxed);
  sms[d.id].store(d.sms, std::memory_order_release);
  return cudaSuccess;
}

// Programmatic dependent launch (sm_90+) for the small kernels of a decode step: launch_early starts a kernel
// while the one before it on the stream is still finishing, so the launch and the block scheduling overlap
// its tail. Such a kernel must call begin_dependent() before touching global memory: it waits until the
// previous kernel has completed and its writes are visible, then lets the next early launch proceed.
// Elsewhere both are plain launches / no-ops. MINISGL_PDL=0 turns early launches off.
__device__ __forceinline__ void begin_dependent() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// For a kernel that reads the previous kernel's results as they arrive instead of waiting for it to finish:
// lets the next early launch proceed (begin_dependent's second half, without its wait).
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

template <typename... Params, typename... Args>
cudaError_t launch_early(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         Args&&... args) {
  static const bool enabled = !(getenv("MINISGL_PDL") && getenv("MINISGL_PDL")[0] == '0');
  DeviceInfo dev;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid, config.blockDim = block, config.dynamicSmemBytes = smem, config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = enabled && device_info(dev) == cudaSuccess && dev.major >= 9 ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace msgl

#define MSGL_CHECK(cond, msg) \
  do {                        \
    if (!(cond)) return msgl::fail(MSGL_ERR_INVALID_ARGUMENT, msg); \
  } while (0)
