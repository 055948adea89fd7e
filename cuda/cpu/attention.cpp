// Attention over slot-indexed KV (page size 1 as the kernels see it), fp32 softmax, bf16 output.
// The GPU kernels round P to bf16 before P·V; here P stays fp32, which is closer to the fp32 reference.
#include <algorithm>
#include "common.h"

using namespace msgl;

namespace {
struct KvView {
  const msgl_bf16* k;
  const msgl_bf16* v;
  const int32_t* slots;  // this request's page-table row
  int kv_dim;            // kv_heads * head_dim
};

// Online-softmax attention of one query head over keys [0, visible) of one request.
void attend(msgl_bf16* out, const msgl_bf16* q, const KvView& kv, int kv_head, int head_dim, int visible,
            float scale) {
  float* qf = scratch(2 * (size_t)head_dim);
  float* acc = qf + head_dim;
  for (int d = 0; d < head_dim; d++) {
    qf[d] = bf16_to_f32(q[d]) * scale;
    acc[d] = 0.f;
  }
  float max_score = -INFINITY, denom = 0.f;
  for (int j = 0; j < visible; j++) {
    size_t base = (size_t)kv.slots[j] * kv.kv_dim + (size_t)kv_head * head_dim;
    const msgl_bf16* kr = kv.k + base;
    float s = 0.f;
    for (int d = 0; d < head_dim; d++) s += qf[d] * bf16_to_f32(kr[d]);
    float p;
    if (s > max_score) {
      float correction = std::exp(max_score - s);
      denom *= correction;
      for (int d = 0; d < head_dim; d++) acc[d] *= correction;
      max_score = s;
      p = 1.f;
    } else {
      p = std::exp(s - max_score);
    }
    denom += p;
    const msgl_bf16* vr = kv.v + base;
    for (int d = 0; d < head_dim; d++) acc[d] += p * bf16_to_f32(vr[d]);
  }
  float inv = visible > 0 ? 1.f / denom : 0.f;
  for (int d = 0; d < head_dim; d++) out[d] = f32_to_bf16(acc[d] * inv);
}

bool valid_heads(int q_heads, int kv_heads, int head_dim) {
  return q_heads > 0 && kv_heads > 0 && head_dim > 0 && q_heads % kv_heads == 0;
}
}  // namespace

extern "C" int msgl_attention_prefill(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                                      const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                                      const int32_t* rows, const int32_t* qo_indptr, const int32_t* kv_lens,
                                      int batch, int tokens, int q_heads, int kv_heads, int head_dim, int q_stride,
                                      float scale, msgl_stream) {
  MSGL_CHECK(batch >= 0 && valid_heads(q_heads, kv_heads, head_dim), "attention_prefill: bad shape");
  for (int b = 0; b < batch; b++) {
    int n = qo_indptr[b + 1] - qo_indptr[b];
    MSGL_CHECK(n >= 0 && n <= kv_lens[b] && kv_lens[b] <= page_stride,
               "attention_prefill: need 0 <= new tokens <= kv_len <= page_stride");
  }
  MSGL_CHECK(qo_indptr[batch] == tokens, "attention_prefill: tokens must equal qo_indptr[batch]");
  int group = q_heads / kv_heads;
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
  for (int t = 0; t < tokens; t++) {
    for (int h = 0; h < q_heads; h++) {
      int b = int(std::upper_bound(qo_indptr, qo_indptr + batch + 1, t) - qo_indptr) - 1;
      int n = qo_indptr[b + 1] - qo_indptr[b];
      int visible = kv_lens[b] - n + (t - qo_indptr[b]) + 1;
      KvView kv{k_cache, v_cache, page_table + (size_t)rows[b] * page_stride, kv_heads * head_dim};
      attend(out + ((size_t)t * q_heads + h) * head_dim, q + (size_t)t * q_stride + (size_t)h * head_dim, kv,
             h / group, head_dim, visible, scale);
    }
  }
  return MSGL_OK;
}

extern "C" int msgl_attention_decode(msgl_bf16* out, const msgl_bf16* q, const msgl_bf16* k_cache,
                                     const msgl_bf16* v_cache, const int32_t* page_table, int page_stride,
                                     const int32_t* rows, const int32_t* kv_lens, int batch, int q_heads,
                                     int kv_heads, int head_dim, int q_stride, float scale, void*, int64_t,
                                     msgl_stream) {
  MSGL_CHECK(batch >= 0 && valid_heads(q_heads, kv_heads, head_dim), "attention_decode: bad shape");
  for (int b = 0; b < batch; b++)
    MSGL_CHECK(kv_lens[b] >= 1 && kv_lens[b] <= page_stride, "attention_decode: need 1 <= kv_len <= page_stride");
  int group = q_heads / kv_heads;
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
  for (int b = 0; b < batch; b++) {
    for (int h = 0; h < q_heads; h++) {
      KvView kv{k_cache, v_cache, page_table + (size_t)rows[b] * page_stride, kv_heads * head_dim};
      attend(out + ((size_t)b * q_heads + h) * head_dim, q + (size_t)b * q_stride + (size_t)h * head_dim, kv,
             h / group, head_dim, kv_lens[b], scale);
    }
  }
  return MSGL_OK;
}

// The CPU needs no split-KV scratch.
extern "C" int64_t msgl_attention_decode_workspace(int, int, int, int) { return 0; }

extern "C" int msgl_attention_variants(int prefill, int decode) {
  if (prefill != MSGL_ATTN_AUTO || decode != MSGL_ATTN_AUTO)
    return fail(MSGL_ERR_UNSUPPORTED, "attention_variants: the CPU library has one attention kernel of each kind");
  return MSGL_OK;
}
