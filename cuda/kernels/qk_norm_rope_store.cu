// msgl_qk_norm_rope_store: per-head RMSNorm of q and k (when their weights are given), neox RoPE, and the KV-cache
// store, fused into one kernel over the merged qkv buffer. One block per token; each warp takes whole heads
// (q heads, then k heads, then v heads) through the same norm_rope_head routine as msgl_head_rmsnorm and
// msgl_rope, so the results are bit-identical to calling head_rmsnorm → rope → store_kv on the GPU.
#include "bf16_rows.cuh"

using namespace msgl;

namespace {

constexpr int kMaxWarps = 16;  // decode runs few tokens: spread a token's heads wide

template <int V>
__global__ void qk_norm_rope_store_kernel(msgl_bf16* qkv, const msgl_bf16* q_norm, const msgl_bf16* k_norm,
                                          const int32_t* positions, const float* cos_sin, msgl_bf16* k_cache,
                                          msgl_bf16* v_cache, const int32_t* slots, int q_heads, int kv_heads,
                                          int head_dim, int rotary_dim, float eps) {
  begin_dependent();
  const int t = blockIdx.x, warps = blockDim.x / 32, heads = q_heads + 2 * kv_heads;
  msgl_bf16* row = qkv + (size_t)t * heads * head_dim;
  const float* cs = cos_sin + (size_t)positions[t] * rotary_dim;
  const size_t slot = (size_t)slots[t] * kv_heads * head_dim;
  for (int h = threadIdx.x / 32; h < heads; h += warps) {
    msgl_bf16* x = row + (size_t)h * head_dim;
    if (h < q_heads) {
      norm_rope_head<V>(x, nullptr, q_norm, cs, head_dim, rotary_dim, eps);
    } else if (h < q_heads + kv_heads) {
      msgl_bf16* dst = k_cache + slot + (size_t)(h - q_heads) * head_dim;
      norm_rope_head<V>(x, dst, k_norm, cs, head_dim, rotary_dim, eps);
    } else {
      msgl_bf16* dst = v_cache + slot + (size_t)(h - q_heads - kv_heads) * head_dim;
      for (int i = (threadIdx.x & 31) * V; i < head_dim; i += 32 * V) copy_bf16<V>(dst + i, x + i);
    }
  }
}

}  // namespace

extern "C" int msgl_qk_norm_rope_store(msgl_bf16* qkv, const msgl_bf16* q_norm, const msgl_bf16* k_norm,
                                       const int32_t* positions, const float* cos_sin, msgl_bf16* k_cache,
                                       msgl_bf16* v_cache, const int32_t* slots, int tokens, int q_heads, int kv_heads,
                                       int head_dim, int rotary_dim, float eps, msgl_stream stream) {
  // The CPU version checks through its three steps, in this order and with their messages.
  int stride = (q_heads + 2 * kv_heads) * head_dim;
  if (q_norm)
    MSGL_CHECK(tokens >= 0 && q_heads > 0 && head_dim > 0 && stride >= q_heads * head_dim, "head_rmsnorm: bad shape");
  if (k_norm)
    MSGL_CHECK(tokens >= 0 && kv_heads > 0 && head_dim > 0 && stride >= kv_heads * head_dim, "head_rmsnorm: bad shape");
  MSGL_CHECK(tokens >= 0 && rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rope: bad shape");
  MSGL_CHECK(tokens >= 0 && kv_heads * head_dim > 0, "store_kv: bad shape");
  MSGL_CHECK(q_heads >= 0 && kv_heads > 0, "qk_norm_rope_store: bad head counts");
  if (tokens == 0) return MSGL_OK;
  int heads = q_heads + 2 * kv_heads, warps = heads < kMaxWarps ? heads : kMaxWarps;
  bool vec = head_dim % 8 == 0 && rotary_dim % 16 == 0 && aligned16(qkv) && aligned16(q_norm) && aligned16(k_norm) &&
             aligned16(cos_sin) && aligned16(k_cache) && aligned16(v_cache);
  launch_early(vec ? qk_norm_rope_store_kernel<8> : qk_norm_rope_store_kernel<1>, tokens, 32 * warps, 0, as_stream(stream),
               qkv, q_norm, k_norm, positions, cos_sin, k_cache, v_cache, slots, q_heads, kv_heads, head_dim, rotary_dim, eps);
  return launched("qk_norm_rope_store");
}
