// Neox-style rotary embedding (rotate the two halves of the rotary dims), in place on q and k.
#include "common.h"

using namespace msgl;

namespace {
void rotate_heads(msgl_bf16* base, int heads, int head_dim, int rot, const float* cs) {
  int half = rot / 2;
  for (int h = 0; h < heads; h++) {
    msgl_bf16* x = base + (size_t)h * head_dim;
    for (int i = 0; i < half; i++) {
      float c = cs[i], s = cs[half + i];
      float a = bf16_to_f32(x[i]), b = bf16_to_f32(x[i + half]);
      x[i] = f32_to_bf16(a * c - b * s);
      x[i + half] = f32_to_bf16(b * c + a * s);
    }
  }
}
}  // namespace

extern "C" int msgl_rope(msgl_bf16* q, msgl_bf16* k, const int32_t* positions, const float* cos_sin,
                         int tokens, int q_heads, int k_heads, int head_dim, int rotary_dim, int q_stride,
                         int k_stride, msgl_stream) {
  MSGL_CHECK(tokens >= 0 && rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rope: bad shape");
#pragma omp parallel for schedule(static) if (tokens > 16)
  for (int t = 0; t < tokens; t++) {
    const float* cs = cos_sin + (size_t)positions[t] * rotary_dim;
    rotate_heads(q + (size_t)t * q_stride, q_heads, head_dim, rotary_dim, cs);
    rotate_heads(k + (size_t)t * k_stride, k_heads, head_dim, rotary_dim, cs);
  }
  return MSGL_OK;
}
