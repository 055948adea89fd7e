// Shared helpers of the CPU implementation: bf16 conversion, errors, per-thread scratch.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include "../include/msgl.h"

namespace msgl {

inline float bf16_to_f32(msgl_bf16 b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as __float2bfloat16_rn does on the GPU.
inline msgl_bf16 f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<msgl_bf16>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<msgl_bf16>(u >> 16);
}

inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

int fail(int code, const char* message);

// Grow-only per-thread fp32 scratch (the CPU's stand-in for registers and shared memory).
inline float* scratch(size_t n, int slot = 0) {
  thread_local std::vector<float> buffers[4];
  std::vector<float>& b = buffers[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

inline void load_row(float* dst, const msgl_bf16* src, int n) {
  for (int i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

}  // namespace msgl

#define MSGL_CHECK(cond, msg) \
  do {                        \
    if (!(cond)) return msgl::fail(MSGL_ERR_INVALID_ARGUMENT, msg); \
  } while (0)
