// RMSNorm, fused residual-add + RMSNorm, and per-head RMSNorm (Qwen3 q/k norm).
#include "common.h"

using namespace msgl;

namespace {
// x holds fp32 values of one row; writes bf16(x / rms * w).
void normalize_row(msgl_bf16* out, const float* x, const msgl_bf16* w, int dim, float eps) {
  float sum = 0.f;
  for (int i = 0; i < dim; i++) sum += x[i] * x[i];
  float inv = 1.f / std::sqrt(sum / dim + eps);
  for (int i = 0; i < dim; i++) out[i] = f32_to_bf16(x[i] * inv * bf16_to_f32(w[i]));
}
}  // namespace

extern "C" int msgl_rmsnorm(msgl_bf16* out, const msgl_bf16* x, const msgl_bf16* w, int rows, int dim,
                            float eps, msgl_stream) {
  MSGL_CHECK(rows >= 0 && dim > 0, "rmsnorm: bad shape");
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int r = 0; r < rows; r++) {
    float* row = scratch(dim);
    load_row(row, x + (size_t)r * dim, dim);
    normalize_row(out + (size_t)r * dim, row, w, dim, eps);
  }
  return MSGL_OK;
}

extern "C" int msgl_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w,
                                int rows, int dim, float eps, msgl_stream) {
  MSGL_CHECK(rows >= 0 && dim > 0, "add_rmsnorm: bad shape");
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int r = 0; r < rows; r++) {
    float* row = scratch(dim);
    msgl_bf16* res = residual + (size_t)r * dim;
    const msgl_bf16* xr = x + (size_t)r * dim;
    for (int i = 0; i < dim; i++) {
      row[i] = round_bf16(bf16_to_f32(xr[i]) + bf16_to_f32(res[i]));
      res[i] = f32_to_bf16(row[i]);
    }
    normalize_row(out + (size_t)r * dim, row, w, dim, eps);
  }
  return MSGL_OK;
}

extern "C" int msgl_head_rmsnorm(msgl_bf16* x, const msgl_bf16* w, int tokens, int heads, int head_dim,
                                 int stride, float eps, msgl_stream) {
  MSGL_CHECK(tokens >= 0 && heads > 0 && head_dim > 0 && stride >= heads * head_dim, "head_rmsnorm: bad shape");
#pragma omp parallel for schedule(static) if (tokens > 16)
  for (int t = 0; t < tokens; t++) {
    float* row = scratch(head_dim);
    for (int h = 0; h < heads; h++) {
      msgl_bf16* p = x + (size_t)t * stride + (size_t)h * head_dim;
      load_row(row, p, head_dim);
      normalize_row(p, row, w, head_dim, eps);
    }
  }
  return MSGL_OK;
}
