// The attention kernel variants a thread's calls use (msgl_attention_variants in msgl.h). A thread-local
// choice: each rank Worker (one thread) sets its own, and every call of that thread sees it.
#include "attention.cuh"
#include "common.cuh"

namespace {
thread_local int prefill_choice = MSGL_ATTN_AUTO;
thread_local int decode_choice = MSGL_ATTN_AUTO;
}  // namespace

// AUTO, from bench:kernels on the H100 (bench/RESULTS.md; no other GPU measured): 64-row prefill tiles up to
// 1024 new tokens (1.26× at 512, 1.11× at 1024: twice the tiles fill the SMs), 128-row tiles above (1.30× at
// 2048 and up to 16k); split-KV decode (1.5× at batch 1; within 5% of no split at batch 64 and 256).
constexpr int kM64MaxTokens = 1024;
int msgl::attn::prefill_variant(int tokens) {
  if (prefill_choice != MSGL_ATTN_AUTO) return prefill_choice;
  return tokens <= kM64MaxTokens ? MSGL_ATTN_PREFILL_M64 : MSGL_ATTN_PREFILL_M128;
}
int msgl::attn::decode_variant() { return decode_choice == MSGL_ATTN_AUTO ? MSGL_ATTN_DECODE_SPLIT : decode_choice; }

extern "C" int msgl_attention_variants(int prefill, int decode) {
  MSGL_CHECK(prefill == MSGL_ATTN_AUTO || prefill == MSGL_ATTN_PREFILL_M128 || prefill == MSGL_ATTN_PREFILL_M64,
             "attention_variants: unknown prefill variant");
  MSGL_CHECK(decode == MSGL_ATTN_AUTO || decode == MSGL_ATTN_DECODE_SPLIT || decode == MSGL_ATTN_DECODE_NOSPLIT,
             "attention_variants: unknown decode variant");
  prefill_choice = prefill;
  decode_choice = decode;
  return MSGL_OK;
}
