// Element-wise and gather ops: embedding, SiLU-and-mul, KV store, row gather, argmax, random fill, the fused
// q/k-norm + RoPE + KV store, and the decode token pool.
#include "common.h"

using namespace msgl;

extern "C" int msgl_embedding(msgl_bf16* out, const msgl_bf16* table, const int32_t* ids, int tokens, int hidden,
                              int vocab_start, int vocab_local, msgl_stream) {
  MSGL_CHECK(tokens >= 0 && hidden > 0 && vocab_local > 0, "embedding: bad shape");
#pragma omp parallel for schedule(static) if (tokens > 64)
  for (int t = 0; t < tokens; t++) {
    int local = ids[t] - vocab_start;
    msgl_bf16* dst = out + (size_t)t * hidden;
    if (local >= 0 && local < vocab_local) std::memcpy(dst, table + (size_t)local * hidden, hidden * 2);
    else std::memset(dst, 0, hidden * 2);
  }
  return MSGL_OK;
}

extern "C" int msgl_silu_mul(msgl_bf16* out, const msgl_bf16* gate_up, int rows, int inter, msgl_stream) {
  MSGL_CHECK(rows >= 0 && inter > 0, "silu_mul: bad shape");
#pragma omp parallel for schedule(static) if (rows > 16)
  for (int r = 0; r < rows; r++) {
    const msgl_bf16* g = gate_up + (size_t)r * 2 * inter;
    const msgl_bf16* u = g + inter;
    msgl_bf16* o = out + (size_t)r * inter;
    for (int i = 0; i < inter; i++) {
      float a = bf16_to_f32(g[i]);
      o[i] = f32_to_bf16(a / (1.f + std::exp(-a)) * bf16_to_f32(u[i]));
    }
  }
  return MSGL_OK;
}

extern "C" int msgl_store_kv(msgl_bf16* k_cache, msgl_bf16* v_cache, const msgl_bf16* k, const msgl_bf16* v,
                             const int32_t* slots, int tokens, int kv_dim, int k_stride, int v_stride,
                             msgl_stream) {
  MSGL_CHECK(tokens >= 0 && kv_dim > 0, "store_kv: bad shape");
  for (int t = 0; t < tokens; t++) {
    size_t dst = (size_t)slots[t] * kv_dim;
    std::memcpy(k_cache + dst, k + (size_t)t * k_stride, kv_dim * 2);
    std::memcpy(v_cache + dst, v + (size_t)t * v_stride, kv_dim * 2);
  }
  return MSGL_OK;
}

extern "C" int msgl_gather_rows(msgl_bf16* out, const msgl_bf16* x, const int32_t* indices, int n, int dim,
                                msgl_stream) {
  MSGL_CHECK(n >= 0 && dim > 0, "gather_rows: bad shape");
  for (int i = 0; i < n; i++) std::memcpy(out + (size_t)i * dim, x + (size_t)indices[i] * dim, dim * 2);
  return MSGL_OK;
}

extern "C" int msgl_argmax(int32_t* out, const float* logits, int rows, int vocab, msgl_stream) {
  MSGL_CHECK(rows >= 0 && vocab > 0, "argmax: bad shape");
#pragma omp parallel for schedule(static) if (rows > 4)
  for (int r = 0; r < rows; r++) {
    const float* l = logits + (size_t)r * vocab;
    int best = 0;
    for (int i = 1; i < vocab; i++)
      if (l[i] > l[best]) best = i;
    out[r] = best;
  }
  return MSGL_OK;
}

namespace {
// splitmix64 finalizer: a counter-based hash, identical in the CUDA implementation.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

extern "C" int msgl_fill_random(msgl_bf16* x, int64_t n, uint64_t seed, float mean, float std, msgl_stream) {
  MSGL_CHECK(n >= 0, "fill_random: negative size");
  const float sqrt3 = 1.7320508075688772f;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
    float u = (float)(h >> 40) * (1.0f / 16777216.0f);  // [0, 1) from 24 bits
    x[i] = f32_to_bf16(mean + std * sqrt3 * (2.f * u - 1.f));
  }
  return MSGL_OK;
}

extern "C" int msgl_qk_norm_rope_store(msgl_bf16* qkv, const msgl_bf16* q_norm, const msgl_bf16* k_norm,
                                       const int32_t* positions, const float* cos_sin, msgl_bf16* k_cache,
                                       msgl_bf16* v_cache, const int32_t* slots, int tokens, int q_heads,
                                       int kv_heads, int head_dim, int rotary_dim, float eps, msgl_stream stream) {
  int stride = (q_heads + 2 * kv_heads) * head_dim;
  msgl_bf16* k = qkv + (size_t)q_heads * head_dim;
  msgl_bf16* v = k + (size_t)kv_heads * head_dim;
  int status;
  if (q_norm && (status = msgl_head_rmsnorm(qkv, q_norm, tokens, q_heads, head_dim, stride, eps, stream))) return status;
  if (k_norm && (status = msgl_head_rmsnorm(k, k_norm, tokens, kv_heads, head_dim, stride, eps, stream))) return status;
  if ((status = msgl_rope(qkv, k, positions, cos_sin, tokens, q_heads, kv_heads, head_dim, rotary_dim, stride, stride,
                          stream)))
    return status;
  return msgl_store_kv(k_cache, v_cache, k, v, slots, tokens, kv_heads * head_dim, stride, stride, stream);
}

extern "C" int msgl_scatter_tokens(int32_t* pool, const int32_t* rows, const int32_t* tokens, int n, msgl_stream) {
  MSGL_CHECK(n >= 0, "scatter_tokens: bad shape");
  for (int i = 0; i < n; i++) pool[rows[i]] = tokens[i];
  return MSGL_OK;
}

extern "C" int msgl_gather_tokens(int32_t* out, const int32_t* pool, const int32_t* rows, int n, msgl_stream) {
  MSGL_CHECK(n >= 0, "gather_tokens: bad shape");
  for (int i = 0; i < n; i++) out[i] = pool[rows[i]];
  return MSGL_OK;
}
