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
#define MSGL_ABI_VERSION 5

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
// On the GPU, with M ≤ 2, w may be read while the kernel before it on the stream still runs (programmatic
// dependent launch): w must not be that kernel's output (model weights never are).
int msgl_gemm(void* y, const msgl_bf16* x, const msgl_bf16* w, const msgl_bf16* bias, int M, int N, int K,
              int x_stride, int out_f32, msgl_stream stream);

// out[r, :] = silu(gate_up[r, :inter]) * gate_up[r, inter:]
int msgl_silu_mul(msgl_bf16* out, const msgl_bf16* gate_up, int rows, int inter, msgl_stream stream);

// act[M, inter] = silu(g) * u, where g and u are x · w[:inter]^T and x · w[inter:]^T rounded to bf16 (w: the
// merged [2 · inter, K] gate_up weight): msgl_gemm then msgl_silu_mul, bit for bit, without the [M, 2 · inter]
// intermediate. The GPU computes it as msgl_gemm's GEMV (so w follows msgl_gemm's rule above) and needs K and
// x_stride multiples of 8 and 16-byte aligned x and w; it is meant for M ≤ 2 (decode).
int msgl_gemm_silu_mul(msgl_bf16* act, const msgl_bf16* x, const msgl_bf16* w, int M, int inter, int K, int x_stride,
                       msgl_stream stream);

// k_cache[slots[t], :] = k[t, :], v_cache[slots[t], :] = v[t, :] for rows of kv_dim = kv_heads*head_dim.
int msgl_store_kv(msgl_bf16* k_cache, msgl_bf16* v_cache, const msgl_bf16* k, const msgl_bf16* v,
                  const int32_t* slots, int tokens, int kv_dim, int k_stride, int v_stride, msgl_stream stream);

// The attention step of one layer before attention, fused: on the merged qkv [tokens, (q_heads + 2*kv_heads)
// * head_dim] (contiguous, q then k then v), in place: per-head RMSNorm of q and k when q_norm / k_norm are
// non-null (Qwen3), then neox RoPE as msgl_rope; then k and v of token t are stored at slots[t] as
// msgl_store_kv. Same results and rounding points as calling those three ops in that order.
int msgl_qk_norm_rope_store(msgl_bf16* qkv, const msgl_bf16* q_norm, const msgl_bf16* k_norm,
                            const int32_t* positions, const float* cos_sin, msgl_bf16* k_cache,
                            msgl_bf16* v_cache, const int32_t* slots, int tokens, int q_heads, int kv_heads,
                            int head_dim, int rotary_dim, float eps, msgl_stream stream);

// Attention of new query tokens over slot-indexed KV.
// Request b has query tokens [qo_indptr[b], qo_indptr[b+1]) and kv_lens[b] keys/values whose slots are
// page_table[rows[b] * page_stride + j], j < kv_lens[b] (its new tokens' KV already stored). Causal,
// bottom-right aligned: query i of n sees keys j <= kv_len - n + i. GQA: q head h reads kv head
// h / (q_heads / kv_heads). out: [tokens, q_heads, head_dim] contiguous bf16. tokens = qo_indptr[batch]
// (the CPU library checks it; the GPU sizes its grid and picks MSGL_ATTN_AUTO's variant from it).
int msgl_attention_prefill(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                           const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                           const int32_t* rows, const int32_t* qo_indptr, const int32_t* kv_lens, int batch,
                           int tokens, int q_heads, int kv_heads, int head_dim, int q_stride, float scale,
                           msgl_stream stream);

// One query token per request (q row b belongs to request b); same KV addressing as above.
// workspace: scratch of at least msgl_attention_decode_workspace(batch, q_heads, head_dim, page_stride) bytes
// (split-KV partial results on the GPU). The launch shape depends only on the integer arguments, never on
// the contents of kv_lens, so one call can be captured in a CUDA graph and replayed with other lengths.
int msgl_attention_decode(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                          const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                          const int32_t* rows, const int32_t* kv_lens, int batch, int q_heads, int kv_heads,
                          int head_dim, int q_stride, float scale, void* workspace, int64_t workspace_bytes,
                          msgl_stream stream);
int64_t msgl_attention_decode_workspace(int batch, int q_heads, int head_dim, int page_stride);

// Which kernel variant this thread's later attention calls use (CUDA graphs keep the variant they captured).
// Prefill: MSGL_ATTN_PREFILL_M128 tiles of 128 (token, q head) rows, 4 warps × 2 m16 blocks, or M64 tiles
// of 64 rows (twice the tiles, half the K/V reuse), or MSGL_ATTN_PREFILL_WGMMA: 128-row tiles on Hopper's
// warpgroup MMA (compute capability 9.0 and a build with sm_90a, else the call fails; head dims other than
// 128 run M128). Decode: MSGL_ATTN_DECODE_SPLIT splits each request's keys over CTAs whenever batch × kv
// heads would leave SMs idle, then merges; NOSPLIT never does.
// MSGL_ATTN_AUTO is the variant measured fastest on the GPU (bench/RESULTS.md). The CPU library has one
// kernel of each and accepts only MSGL_ATTN_AUTO.
#define MSGL_ATTN_AUTO 0
#define MSGL_ATTN_PREFILL_M128 1
#define MSGL_ATTN_PREFILL_M64 2
#define MSGL_ATTN_PREFILL_WGMMA 3
#define MSGL_ATTN_DECODE_SPLIT 1
#define MSGL_ATTN_DECODE_NOSPLIT 2
int msgl_attention_variants(int prefill, int decode);

// out[i, :] = x[indices[i], :] (e.g. the last token of each request before the LM head).
int msgl_gather_rows(msgl_bf16* out, const msgl_bf16* x, const int32_t* indices, int n, int dim,
                     msgl_stream stream);

// Device token pool (one int32 per page-table row) that carries sampled tokens to the next decode step:
// msgl_scatter_tokens: pool[rows[i]] = tokens[i]; msgl_gather_tokens: out[i] = pool[rows[i]].
int msgl_scatter_tokens(int32_t* pool, const int32_t* rows, const int32_t* tokens, int n, msgl_stream stream);
int msgl_gather_tokens(int32_t* out, const int32_t* pool, const int32_t* rows, int n, msgl_stream stream);

// out[r] = index of the largest logits[r, :] (lowest index on ties).
int msgl_argmax(int32_t* out, const float* logits, int rows, int vocab, msgl_stream stream);

// Deterministic fill for dummy weights: x[i] = bf16(mean + std * u(seed, i)), u uniform in [-sqrt3, sqrt3]
// (unit variance), from a counter-based hash so any backend gives the same bits.
int msgl_fill_random(msgl_bf16* x, int64_t n, uint64_t seed, float mean, float std, msgl_stream stream);

// ---- Sampling (fp32 logits [rows, vocab]; per-row parameter arrays are indexed by row) ----
// "Rank order" below: descending logit (hence descending probability), ties lower token id first.

// In place, for each entry e (a unique (rows[e], tokens[e]) pair: a token that occurs in that row's prompt
// or output), with r = rows[e] and x = logits[r, tokens[e]]:
//   x = x > 0 ? x / repetition[r] : x * repetition[r]                   (HF repetition penalty)
//   if output_counts[e] > 0: x -= frequency[r] * output_counts[e] + presence[r]   (OpenAI penalties)
// output_counts[e] = occurrences of the token among generated tokens (0 if it is only in the prompt).
int msgl_apply_penalties(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                         const int32_t* output_counts, const float* presence, const float* frequency,
                         const float* repetition, msgl_stream stream);

// In place: logits[rows[e], tokens[e]] += values[e] for unique (row, token) pairs (logit_bias; -INFINITY bans).
int msgl_add_sparse(float* logits, int vocab, int entries, const int32_t* rows, const int32_t* tokens,
                    const float* values, msgl_stream stream);

// out[r] = one token drawn from row r; logits are not modified. Per row:
//  1. temperature[r] <= 0: out = argmax (lowest id on ties); nothing else applies.
//  2. w[i] = exp((logit[i] - max logit) / temperature[r]) (probabilities up to one factor; max w = 1).
//  3. top_k[r] in [1, vocab): keep the first top_k[r] tokens in rank order (0 or >= vocab: keep all).
//  4. top_p[r] < 1: of those, keep the shortest rank-order prefix whose w-sum >= top_p[r] * (w-sum of the
//     tokens step 3 kept), i.e. top-p on the distribution renormalized after top-k.
//  5. min_p[r] > 0: drop kept tokens with w < min_p[r] (prob < min_p * max prob); also drop w == 0.
//  6. u = (splitmix64(uint64(seeds[r]) << 32 | uint32(steps[r])) >> 11) * 2^-53, in [0, 1), where
//     splitmix64(x) is that generator's first output from state x (its finalizer of x + 0x9e3779b97f4a7c15);
//     the token is the first kept one, in rank order, at which the running w-sum exceeds u * (kept w-sum).
// Each filter keeps a rank-order prefix, so the steps are order statistics (radix select, no sort), and a
// row's draw depends only on its logits, seed and step, never on the rest of the batch.
int msgl_sample(int32_t* out, const float* logits, int rows, int vocab, const float* temperature,
                const int32_t* top_k, const float* top_p, const float* min_p, const uint32_t* seeds,
                const int32_t* steps, msgl_stream stream);

// Log-probabilities of the logits as passed (after penalties and bias, before temperature and filters):
// chosen_logprob[r] = log_softmax(logits[r])[chosen[r]]; top_ids[r, :k] / top_logprobs[r, :k] = the k most
// likely tokens of row r in rank order and their log-probabilities. top_ids / top_logprobs may be null
// when k = 0.
int msgl_logprobs(float* chosen_logprob, int32_t* top_ids, float* top_logprobs, const float* logits,
                  const int32_t* chosen, int rows, int vocab, int k, msgl_stream stream);

#ifdef __cplusplus
}
#endif
