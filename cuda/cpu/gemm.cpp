// y = x · w^T (+ bias), bf16 inputs, fp32 accumulation, bf16 or fp32 output; and the gate_up GEMM fused with
// SiLU-and-mul.
#include <cmath>
#include "common.h"

using namespace msgl;

namespace {
constexpr int kTileN = 8;  // rows of w converted to fp32 together; each x row is then reused kTileN times

inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}
}  // namespace

extern "C" int msgl_gemm(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N,
                         int K, int x_stride, int out_f32, msgl_stream) {
  MSGL_CHECK(M >= 0 && N > 0 && K > 0 && x_stride >= K, "gemm: bad shape");
  if (M == 0) return MSGL_OK;
  // x in fp32 once, in the calling thread's scratch (ranks of the CPU tensor-parallel twin call concurrently).
  float* xf = scratch((size_t)M * K, 1);
  for (int m = 0; m < M; m++) load_row(xf + (size_t)m * K, x + (size_t)m * x_stride, K);
  int tiles = (N + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(static) if ((size_t)M * N * K > 65536)
  for (int tile = 0; tile < tiles; tile++) {
    int n0 = tile * kTileN, n1 = n0 + kTileN < N ? n0 + kTileN : N;
    float* wf = scratch((size_t)kTileN * K);
    for (int n = n0; n < n1; n++) load_row(wf + (size_t)(n - n0) * K, w + (size_t)n * K, K);
    for (int m = 0; m < M; m++) {
      const float* xr = xf + (size_t)m * K;
      for (int n = n0; n < n1; n++) {
        float acc = dot(xr, wf + (size_t)(n - n0) * K, K);
        if (bias) acc += bf16_to_f32(bias[n]);
        size_t at = (size_t)m * N + n;
        if (out_f32) static_cast<float*>(y)[at] = acc;
        else static_cast<msgl_bf16*>(y)[at] = f32_to_bf16(acc);
      }
    }
  }
  return MSGL_OK;
}

extern "C" int msgl_gemm_silu_mul(msgl_bf16* act, const msgl_bf16* x, const msgl_bf16* w, int M, int inter, int K,
                                  int x_stride, msgl_stream) {
  MSGL_CHECK(M >= 0 && inter > 0 && K > 0 && x_stride >= K, "gemm_silu_mul: bad shape");
  if (M == 0) return MSGL_OK;
  float* xf = scratch((size_t)M * K, 1);
  for (int m = 0; m < M; m++) load_row(xf + (size_t)m * K, x + (size_t)m * x_stride, K);
  int tiles = (inter + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(static) if ((size_t)M * inter * K > 32768)
  for (int tile = 0; tile < tiles; tile++) {
    int n0 = tile * kTileN, n1 = n0 + kTileN < inter ? n0 + kTileN : inter;
    float* gate = scratch((size_t)2 * kTileN * K);  // gate rows, then the matching up rows
    float* up = gate + (size_t)kTileN * K;
    for (int n = n0; n < n1; n++) {
      load_row(gate + (size_t)(n - n0) * K, w + (size_t)n * K, K);
      load_row(up + (size_t)(n - n0) * K, w + (size_t)(n + inter) * K, K);
    }
    for (int m = 0; m < M; m++) {
      const float* xr = xf + (size_t)m * K;
      for (int n = n0; n < n1; n++) {  // msgl_gemm's rounding, then msgl_silu_mul's arithmetic
        float g = bf16_to_f32(f32_to_bf16(dot(xr, gate + (size_t)(n - n0) * K, K)));
        float u = bf16_to_f32(f32_to_bf16(dot(xr, up + (size_t)(n - n0) * K, K)));
        act[(size_t)m * inter + n] = f32_to_bf16(g / (1.f + std::exp(-g)) * u);
      }
    }
  }
  return MSGL_OK;
}
