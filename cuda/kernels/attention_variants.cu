// The attention kernel variants a thread's calls use (msgl_attention_variants in msgl.h). A thread-local
// choice: each rank Worker (one thread) sets its own, and every call of that thread sees it.
#include "attention.cuh"
#include "common.cuh"

namespace {
thread_local int prefill_choice = MSGL_ATTN_AUTO;
thread_local int decode_choice = MSGL_ATTN_AUTO;
}  // namespace

// AUTO: 128-row prefill tiles and split-KV decode were the faster of each pair on every shape of
// bench:kernels on the H100 and H200 (bench/RESULTS.md); no other GPU has been measured.
int msgl::attn::prefill_variant() { return prefill_choice == MSGL_ATTN_AUTO ? MSGL_ATTN_PREFILL_M128 : prefill_choice; }
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
