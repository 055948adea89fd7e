// msgl_qk_norm_rope_store: per-head RMSNorm of q and k (when their weights are given), neox RoPE, and the KV-cache
// store, fused into one kernel over the merged qkv buffer. One warp per (token, head): q heads, then k heads,
// then v heads, through the same routines as msgl_head_rmsnorm and msgl_rope, so the results are
// bit-identical to calling head_rmsnorm → rope → store_kv on the GPU. In a decode step this kernel sits on
// the critical path between the QKV GEMM and attention, so a warp loads everything that the GEMM does not
// write (positions, slots, norm weights, cos / sin) before it waits for the GEMM: positions and slots must
// not be written by the kernel launched just before this one.
#include "bf16_rows.cuh"

using namespace msgl;

namespace {

constexpr int kWarps = 4;

template <int V>
__global__ void __launch_bounds__(32 * kWarps)
    qk_norm_rope_store_kernel(msgl_bf16* qkv, const msgl_bf16* q_norm, const msgl_bf16* k_norm, const int32_t* positions,
                              const float* cos_sin, msgl_bf16* k_cache, msgl_bf16* v_cache, const int32_t* slots,
                              int64_t items, int q_heads, int kv_heads, int head_dim, int rotary_dim, float eps) {
  const int64_t item = (int64_t)blockIdx.x * kWarps + threadIdx.x / 32;
  const int heads = q_heads + 2 * kv_heads;
  const int64_t t = item / heads;
  const int h = (int)(item - t * heads);
  const bool live = item < items, is_q = h < q_heads, is_k = !is_q && h < q_heads + kv_heads;
  const float* cs = live && (is_q || is_k) ? cos_sin + (size_t)positions[t] * rotary_dim : nullptr;
  const size_t slot = live && !is_q ? (size_t)slots[t] * kv_heads * head_dim : 0;
  const msgl_bf16* w = is_q ? q_norm : is_k ? k_norm : nullptr;
  constexpr bool kLanes = V == 8;
  HeadLane k{};
  if (kLanes && live && head_dim <= 256) load_head_lane(k, w, cs, head_dim, rotary_dim);
  begin_dependent();
  if (!live) return;
  msgl_bf16* x = qkv + (size_t)t * heads * head_dim + (size_t)h * head_dim;
  msgl_bf16* dst = is_k ? k_cache + slot + (size_t)(h - q_heads) * head_dim : nullptr;
  if (is_q || is_k) {
    if (kLanes && head_dim <= 256) norm_rope_lane(x, dst, k, w != nullptr, true, head_dim, rotary_dim, eps);
    else norm_rope_head<V>(x, dst, w, cs, head_dim, rotary_dim, eps);
  } else {
    dst = v_cache + slot + (size_t)(h - q_heads - kv_heads) * head_dim;
    for (int i = (threadIdx.x & 31) * V; i < head_dim; i += 32 * V) copy_bf16<V>(dst + i, x + i);
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
  const int64_t items = (int64_t)tokens * (q_heads + 2 * kv_heads);
  bool vec = head_dim % 8 == 0 && rotary_dim % 16 == 0 && aligned16(qkv) && aligned16(q_norm) && aligned16(k_norm) &&
             aligned16(cos_sin) && aligned16(k_cache) && aligned16(v_cache);
  launch_early(vec ? qk_norm_rope_store_kernel<8> : qk_norm_rope_store_kernel<1>, (unsigned)((items + kWarps - 1) / kWarps),
               32 * kWarps, 0, as_stream(stream), qkv, q_norm, k_norm, positions, cos_sin, k_cache, v_cache, slots, items,
               q_heads, kv_heads, head_dim, rotary_dim, eps);
  return launched("qk_norm_rope_store");
}
