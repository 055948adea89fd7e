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

// For every x row m and output n < N: the dot products of x row m with the R rows w_row(n, 0 .. R-1), handed to
// emit(m, n, dots). x goes to fp32 once; the w rows of kTileN outputs at a time, each then reused for every x row.
template <int R, class WRow, class Emit>
void tiled_dots(const msgl_bf16* x, int x_stride, int M, int N, int K, WRow w_row, Emit emit) {
  // x in the calling thread's scratch (ranks of the CPU tensor-parallel twin call concurrently).
  float* xf = scratch((size_t)M * K, 1);
  for (int m = 0; m < M; m++) load_row(xf + (size_t)m * K, x + (size_t)m * x_stride, K);
  int tiles = (N + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(static) if ((size_t)M * N * R * K > 65536)
  for (int tile = 0; tile < tiles; tile++) {
    int n0 = tile * kTileN, n1 = n0 + kTileN < N ? n0 + kTileN : N;
    float* wf = scratch((size_t)R * kTileN * K);  // row r of output n at ((n - n0) · R + r) · K
    for (int n = n0; n < n1; n++)
      for (int r = 0; r < R; r++) load_row(wf + ((size_t)(n - n0) * R + r) * K, w_row(n, r), K);
    for (int m = 0; m < M; m++) {
      const float* xr = xf + (size_t)m * K;
      for (int n = n0; n < n1; n++) {
        float dots[R];
        for (int r = 0; r < R; r++) dots[r] = dot(xr, wf + ((size_t)(n - n0) * R + r) * K, K);
        emit(m, n, dots);
      }
    }
  }
}
}  // namespace

extern "C" int msgl_gemm(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N,
                         int K, int x_stride, int out_f32, msgl_stream) {
  MSGL_CHECK(M >= 0 && N > 0 && K > 0 && x_stride >= K, "gemm: bad shape");
  if (M == 0) return MSGL_OK;
  tiled_dots<1>(x, x_stride, M, N, K, [&](int n, int) { return w + (size_t)n * K; }, [&](int m, int n, const float* dots) {
    float acc = dots[0];
    if (bias) acc += bf16_to_f32(bias[n]);
    size_t at = (size_t)m * N + n;
    if (out_f32) static_cast<float*>(y)[at] = acc;
    else static_cast<msgl_bf16*>(y)[at] = f32_to_bf16(acc);
  });
  return MSGL_OK;
}

extern "C" int msgl_gemm_silu_mul(msgl_bf16* act, const msgl_bf16* x, const msgl_bf16* w, int M, int inter, int K,
                                  int x_stride, msgl_stream) {
  MSGL_CHECK(M >= 0 && inter > 0 && K > 0 && x_stride >= K, "gemm_silu_mul: bad shape");
  if (M == 0) return MSGL_OK;
  // Output n: gate row n and up row n + inter; msgl_gemm's rounding, then msgl_silu_mul's arithmetic.
  tiled_dots<2>(x, x_stride, M, inter, K, [&](int n, int r) { return w + ((size_t)n + (size_t)r * inter) * K; },
                [&](int m, int n, const float* dots) {
                  float g = bf16_to_f32(f32_to_bf16(dots[0])), u = bf16_to_f32(f32_to_bf16(dots[1]));
                  act[(size_t)m * inter + n] = f32_to_bf16(g / (1.f + std::exp(-g)) * u);
                });
  return MSGL_OK;
}
