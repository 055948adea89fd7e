// The C ABI of minisgl's native ops. Two libraries implement it with the same symbols:
// build/libmsgl_cpu.so (cuda/cpu/*.cpp) and build/libmsgl_cuda.so (cuda/kernels/*.cu).
//
// Rules every symbol follows:
//  - named msgl_*, extern "C", plain pointers / ints / floats, a stream handle last (ignored on CPU);
//  - never allocates; returns MSGL_OK or an error code;
//  - bf16 storage (uint16 bits), fp32 math, results rounded to bf16 where the GPU kernels round;
//  - pointer arguments may alias only where a comment says so.
// Layouts are row-major. "stride" arguments count elements between consecutive tokens, so ops can
// work on the q / k / v sections of one merged QKV buffer without copies.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped on any change of a signature or semantics; the TypeScript loader compares it with this header.
#define MSGL_ABI_VERSION 1

enum msgl_status {
  MSGL_OK = 0,
  MSGL_ERR_INVALID_ARGUMENT = 1,
  MSGL_ERR_DEVICE = 2,
  MSGL_ERR_UNSUPPORTED = 3,
};

typedef uint16_t msgl_bf16;
typedef void* msgl_stream;

int msgl_abi_version(void);
// A short description of the last error on this thread ("" when none).
const char* msgl_last_error(void);

// out[t, :] = table[ids[t] - vocab_start, :] when vocab_start <= ids[t] < vocab_start + vocab_local, else 0.
// (vocab_start / vocab_local let a tensor-parallel rank hold one slice of the vocabulary.)
int msgl_embedding(msgl_bf16* out, const msgl_bf16* table, const int32_t* ids, int tokens, int hidden,
                   int vocab_start, int vocab_local, msgl_stream stream);

// out = x / rms(x) * w over rows of `dim`; out may equal x.
int msgl_rmsnorm(msgl_bf16* out, const msgl_bf16* x, const msgl_bf16* w, int rows, int dim, float eps,
                 msgl_stream stream);

// residual = bf16(x + residual); out = rmsnorm(residual) * w. out may equal x.
int msgl_add_rmsnorm(msgl_bf16* out, msgl_bf16* residual, const msgl_bf16* x, const msgl_bf16* w, int rows,
                     int dim, float eps, msgl_stream stream);

// In place, per head: x[t, h, :] = rmsnorm(x[t, h, :]) * w, with `stride` elements between tokens
// (Qwen3's q_norm / k_norm on the q or k section of a merged QKV buffer).
int msgl_head_rmsnorm(msgl_bf16* x, const msgl_bf16* w, int tokens, int heads, int head_dim, int stride,
                      float eps, msgl_stream stream);

// In place neox-style RoPE on q [tokens, q_heads, head_dim] and k [tokens, k_heads, head_dim] (strided).
// cos_sin: fp32 [max_position, rotary_dim] = cos for the first rotary_dim/2 columns, sin for the rest;
// only the first rotary_dim dims of each head rotate (partial rotary).
int msgl_rope(msgl_bf16* q, msgl_bf16* k, const int32_t* positions, const float* cos_sin, int tokens,
              int q_heads, int k_heads, int head_dim, int rotary_dim, int q_stride, int k_stride,
              msgl_stream stream);

// y[M, N] = x[M, K] · w[N, K]^T (+ bias[N]); fp32 accumulate. out_f32 = 0: y is bf16; 1: y is fp32.
// x rows are `x_stride` elements apart (>= K).
int msgl_gemm(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N, int K,
              int x_stride, int out_f32, msgl_stream stream);

// out[r, :] = silu(gate_up[r, :inter]) * gate_up[r, inter:]
int msgl_silu_mul(msgl_bf16* out, const msgl_bf16* gate_up, int rows, int inter, msgl_stream stream);

// k_cache[slots[t], :] = k[t, :], v_cache[slots[t], :] = v[t, :] for rows of kv_dim = kv_heads*head_dim.
int msgl_store_kv(msgl_bf16* k_cache, msgl_bf16* v_cache, const msgl_bf16* k, const msgl_bf16* v,
                  const int32_t* slots, int tokens, int kv_dim, int k_stride, int v_stride, msgl_stream stream);

// Attention of new query tokens over slot-indexed KV.
// Request b has query tokens [qo_indptr[b], qo_indptr[b+1]) and kv_lens[b] keys/values whose slots are
// page_table[rows[b] * page_stride + j], j < kv_lens[b] (its new tokens' KV already stored). Causal,
// bottom-right aligned: query i of n sees keys j <= kv_len - n + i. GQA: q head h reads kv head
// h / (q_heads / kv_heads). out: [tokens, q_heads, head_dim] contiguous bf16.
int msgl_attention_prefill(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                           const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                           const int32_t* rows, const int32_t* qo_indptr, const int32_t* kv_lens, int batch,
                           int q_heads, int kv_heads, int head_dim, int q_stride, float scale,
                           msgl_stream stream);

// One query token per request (q row b belongs to request b); same KV addressing as above.
int msgl_attention_decode(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                          const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                          const int32_t* rows, const int32_t* kv_lens, int batch, int q_heads, int kv_heads,
                          int head_dim, int q_stride, float scale, msgl_stream stream);

// out[i, :] = x[indices[i], :] (e.g. the last token of each request before the LM head).
int msgl_gather_rows(msgl_bf16* out, const msgl_bf16* x, const int32_t* indices, int n, int dim,
                     msgl_stream stream);

// out[r] = index of the largest logits[r, :] (lowest index on ties).
int msgl_argmax(int32_t* out, const float* logits, int rows, int vocab, msgl_stream stream);

// Deterministic fill for dummy weights: x[i] = bf16(mean + std * u(seed, i)), u uniform in [-sqrt3, sqrt3]
// (unit variance), from a counter-based hash so any backend gives the same bits.
int msgl_fill_random(msgl_bf16* x, int64_t n, uint64_t seed, float mean, float std, msgl_stream stream);

#ifdef __cplusplus
}
#endif
