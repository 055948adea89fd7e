// Row helpers shared by elementwise.cu and qk_norm_rope_store.cu: V-wide bf16 loads/stores (V = 8 is one
// 16-byte access, V = 1 the scalar fallback), and the per-head RMSNorm + neox RoPE routine of one warp, so the
// fused kernel and the separate ops round at the same points with the same arithmetic.
#pragma once
#include "common.cuh"

namespace msgl {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Threads for a block that walks `units` vectors: a multiple of 32 in [32, max_threads].
inline int block_threads(int64_t units, int max_threads) {
  int64_t t = (units + 31) / 32 * 32;
  return t < 32 ? 32 : t > max_threads ? max_threads : static_cast<int>(t);
}

template <int V>
__device__ __forceinline__ void load_bf16(const msgl_bf16* p, float (&f)[V]) {
  if constexpr (V == 8) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) f[i] = to_f32(p[i]);
  }
}

// Rounds each value to bf16 (nearest even) and stores them.
template <int V>
__device__ __forceinline__ void store_bf16(msgl_bf16* p, const float (&f)[V]) {
  if constexpr (V == 8) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) w[i] = static_cast<uint32_t>(to_bf16(f[2 * i])) | static_cast<uint32_t>(to_bf16(f[2 * i + 1])) << 16;
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) p[i] = to_bf16(f[i]);
  }
}

template <int V>
__device__ __forceinline__ void load_f32(const float* p, float (&f)[V]) {
  if constexpr (V == 8) {
    float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) f[i] = p[i];
  }
}

// Bit copy of V bf16 values.
template <int V>
__device__ __forceinline__ void copy_bf16(msgl_bf16* dst, const msgl_bf16* src) {
  if constexpr (V == 8) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) dst[i] = src[i];
  }
}

// What one lane of a warp that works on a head of at most 256 dims (V = 8) reads besides the head itself: its
// 8 norm weights and the cos / sin values of its rotation pairs. Constant over a forward, so a kernel may
// load it before waiting for the kernel before it.
struct HeadLane {
  float w[8], c[8], s[8];
};

__device__ __forceinline__ void load_head_lane(HeadLane& k, const msgl_bf16* w, const float* cs, int hd, int rot) {
  const int i = (threadIdx.x & 31) * 8, half = cs ? rot / 2 : 0;
  if (w && i < hd) load_bf16<8>(w + i, k.w);
  if (i < 2 * half) {
    const int p = i < half ? i : i - half;
    load_f32<8>(cs + p, k.c);
    load_f32<8>(cs + half + p, k.s);
  }
}

// norm_rope_head for hd <= 256 with V = 8, every load issued at once: lane L holds x[8L, 8L + 8), and the
// partner half of each rotation pair comes from the lane half / 8 away. Same arithmetic as the loop below.
__device__ __forceinline__ void norm_rope_lane(msgl_bf16* x, msgl_bf16* copy, const HeadLane& k, bool has_w, bool has_cs,
                                               int hd, int rot, float eps) {
  const int lane = threadIdx.x & 31, i = lane * 8, half = has_cs ? rot / 2 : 0, pair = half / 8;
  const bool mine = i < hd, rotated = i < 2 * half;
  float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (mine) load_bf16<8>(x + i, v);
  float inv = 0.f;
  if (has_w) {
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) sum = __fmaf_rn(v[j], v[j], sum);
    inv = 1.f / sqrtf(warp_sum(sum) / hd + eps);
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = rotated ? round_bf16(v[j] * inv * k.w[j]) : v[j] * inv * k.w[j];
  }
  const int partner = lane < pair ? lane + pair : lane < 2 * pair ? lane - pair : lane;
  if (half > 0) {
    float r[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float p = __shfl_sync(0xffffffffu, v[j], partner);  // first half: a = v, b = p; second: b = v, a = p
      r[j] = i < half ? __fmaf_rn(v[j], k.c[j], -__fmul_rn(p, k.s[j])) : __fmaf_rn(v[j], k.c[j], __fmul_rn(p, k.s[j]));
    }
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = rotated ? r[j] : v[j];
  }
  if (mine && (has_w || rotated)) store_bf16<8>(x + i, v);
  if (mine && copy) store_bf16<8>(copy + i, v);
}

// One warp, in place on one head x[0, hd): when w is non-null, x = bf16(x / rms(x) * w) (msgl_head_rmsnorm);
// then when cs is non-null (the cos_sin row of this token's position), neox RoPE of the first rot dims
// (msgl_rope). When copy is non-null, the final head is also written there (the KV-cache slot). V = 8 needs
// hd % 8 == 0, rot % 16 == 0 and 16-byte aligned x, copy, w and cs.
template <int V>
__device__ __forceinline__ void norm_rope_head(msgl_bf16* x, msgl_bf16* copy, const msgl_bf16* w, const float* cs,
                                               int hd, int rot, float eps) {
  if constexpr (V == 8) {
    if (hd <= 256) {
      HeadLane k{};
      load_head_lane(k, w, cs, hd, rot);
      norm_rope_lane(x, copy, k, w != nullptr, cs != nullptr, hd, rot, eps);
      return;
    }
  }
  const int lane = threadIdx.x & 31;
  float inv = 0.f;
  if (w) {
    float sum = 0.f;
    for (int i = lane * V; i < hd; i += 32 * V) {
      float v[V];
      load_bf16<V>(x + i, v);
#pragma unroll
      for (int j = 0; j < V; j++) sum = __fmaf_rn(v[j], v[j], sum);
    }
    // Every lane's loads above feed this shuffle, so no lane writes x below before all lanes have read it.
    sum = warp_sum(sum);
    inv = 1.f / sqrtf(sum / hd + eps);
  }
  const int half = cs ? rot / 2 : 0;
  for (int i = lane * V; i < half; i += 32 * V) {
    float a[V], b[V], c[V], s[V], ra[V], rb[V];
    load_bf16<V>(x + i, a);
    load_bf16<V>(x + i + half, b);
    if (w) {
      float wa[V], wb[V];
      load_bf16<V>(w + i, wa);
      load_bf16<V>(w + i + half, wb);
#pragma unroll
      for (int j = 0; j < V; j++) {
        a[j] = round_bf16(a[j] * inv * wa[j]);
        b[j] = round_bf16(b[j] * inv * wb[j]);
      }
    }
    load_f32<V>(cs + i, c);
    load_f32<V>(cs + half + i, s);
    // The CPU library (g++ -O3, contraction on) computes a*c - b*s as fma(a, c, -(b*s)) and b*c + a*s as
    // fma(b, c, a*s); spelled out so both give the same bits.
#pragma unroll
    for (int j = 0; j < V; j++) {
      ra[j] = __fmaf_rn(a[j], c[j], -__fmul_rn(b[j], s[j]));
      rb[j] = __fmaf_rn(b[j], c[j], __fmul_rn(a[j], s[j]));
    }
    store_bf16<V>(x + i, ra);
    store_bf16<V>(x + i + half, rb);
    if (copy) {
      store_bf16<V>(copy + i, ra);
      store_bf16<V>(copy + i + half, rb);
    }
  }
  if (!w && !copy) return;
  for (int i = 2 * half + lane * V; i < hd; i += 32 * V) {
    float v[V];
    load_bf16<V>(x + i, v);
    if (w) {
      float wv[V];
      load_bf16<V>(w + i, wv);
#pragma unroll
      for (int j = 0; j < V; j++) v[j] = v[j] * inv * wv[j];
      store_bf16<V>(x + i, v);
    }
    if (copy) store_bf16<V>(copy + i, v);  // v is bf16-exact here unless w rescaled it, and then rounds the same
  }
}

// RMSNorm of one row by the whole block (blockDim a multiple of 32), in two passes: load_x(i, v) gives x's
// values [i, i + V). With a residual, pass one stores residual = bf16(x + residual) and pass two reads it back
// (each thread reads only what it wrote); without, pass two calls load_x again. out = row / rms · w. Shared
// by msgl_rmsnorm / msgl_add_rmsnorm and the fused peer all-reduce, so both round at the same points.
template <int V, class LoadX>
__device__ __forceinline__ void rmsnorm_row(msgl_bf16* out, msgl_bf16* residual, LoadX load_x, const msgl_bf16* w,
                                            int dim, float eps) {
  float sum = 0.f;
  for (int i = threadIdx.x * V; i < dim; i += blockDim.x * V) {
    float v[V];
    load_x(i, v);
    if (residual) {
      float r[V];
      load_bf16<V>(residual + i, r);
#pragma unroll
      for (int j = 0; j < V; j++) v[j] = round_bf16(v[j] + r[j]);
      store_bf16<V>(residual + i, v);
    }
#pragma unroll
    for (int j = 0; j < V; j++) sum = __fmaf_rn(v[j], v[j], sum);
  }
  sum = block_sum(sum);  // its barriers also order pass one's reads of x before pass two's writes of out
  const float inv = 1.f / sqrtf(sum / dim + eps);
  for (int i = threadIdx.x * V; i < dim; i += blockDim.x * V) {
    float v[V], wv[V];
    if (residual) load_bf16<V>(residual + i, v);
    else load_x(i, v);
    load_bf16<V>(w + i, wv);
#pragma unroll
    for (int j = 0; j < V; j++) v[j] = v[j] * inv * wv[j];
    store_bf16<V>(out + i, v);
  }
}

}  // namespace msgl
