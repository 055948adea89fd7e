// Shared helpers of the CUDA implementation: errors, launch checks, bf16 conversion, warp reductions.
#pragma once
#include <atomic>
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

// SM count and opt-in shared memory per block of the current device, queried once per device.
struct DeviceInfo {
  int id, sms, smem_optin;
};
constexpr int kMaxDevices = 64;

inline cudaError_t device_info(DeviceInfo& d) {
  static std::atomic<int> sms[kMaxDevices], smem[kMaxDevices];
  cudaError_t e = cudaGetDevice(&d.id);
  if (e != cudaSuccess) return e;
  if (d.id < 0 || d.id >= kMaxDevices) return cudaErrorInvalidDevice;
  d.sms = sms[d.id].load(std::memory_order_acquire);
  if (d.sms > 0) {
    d.smem_optin = smem[d.id].load(std::memory_order_relaxed);
    return cudaSuccess;
  }
  if ((e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.id)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d.id)) != cudaSuccess)
    return e;
  smem[d.id].store(d.smem_optin, std::memory_order_relaxed);
  sms[d.id].store(d.sms, std::memory_order_release);
  return cudaSuccess;
}

}  // namespace msgl

#define MSGL_CHECK(cond, msg) \
  do {                        \
    if (!(cond)) return msgl::fail(MSGL_ERR_INVALID_ARGUMENT, msg); \
  } while (0)
