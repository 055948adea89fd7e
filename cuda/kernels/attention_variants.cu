// The attention kernel variants a thread's calls use (msgl_attention_variants in msgl.h). A thread-local
// choice: each rank Worker (one thread) sets its own, and every call of that thread sees it.
#include "attention_prefill.cuh"
#include "common.cuh"

namespace {
thread_local int prefill_choice = MSGL_ATTN_AUTO;
thread_local int decode_choice = MSGL_ATTN_AUTO;
}  // namespace

// AUTO, from bench:kernels on the H100 (bench/RESULTS.md; no other GPU measured): the wgmma prefill kernel
// where it runs (1.22× the 64-row tiles at 512 new tokens, 1.30× at 1024; 1.13–1.25× the 128-row tiles from
// 2048 to 16k); elsewhere 64-row tiles up to 1024 new tokens (1.26× at 512, 1.11× at 1024: twice the tiles
// fill the SMs) and 128-row tiles above (1.30× at 2048 and up to 16k). Split-KV decode (1.5× at batch 1;
// within 5% of no split at batch 64 and 256).
constexpr int kM64MaxTokens = 1024;
int msgl::attn::prefill_variant(int tokens, bool wgmma) {
  if (wgmma && (prefill_choice == MSGL_ATTN_AUTO || prefill_choice == MSGL_ATTN_PREFILL_WGMMA))
    return MSGL_ATTN_PREFILL_WGMMA;
  if (prefill_choice == MSGL_ATTN_PREFILL_WGMMA) return MSGL_ATTN_PREFILL_M128;
  if (prefill_choice != MSGL_ATTN_AUTO) return prefill_choice;
  return tokens <= kM64MaxTokens ? MSGL_ATTN_PREFILL_M64 : MSGL_ATTN_PREFILL_M128;
}
int msgl::attn::decode_variant() { return decode_choice == MSGL_ATTN_AUTO ? MSGL_ATTN_DECODE_SPLIT : decode_choice; }

extern "C" int msgl_attention_variants(int prefill, int decode) {
  MSGL_CHECK(prefill == MSGL_ATTN_AUTO || prefill == MSGL_ATTN_PREFILL_M128 || prefill == MSGL_ATTN_PREFILL_M64 ||
                 prefill == MSGL_ATTN_PREFILL_WGMMA,
             "attention_variants: unknown prefill variant");
  if (prefill == MSGL_ATTN_PREFILL_WGMMA) {
    msgl::DeviceInfo dev;
    if (msgl::device_info(dev) != cudaSuccess || !msgl::attn::prefill::wgmma_available(dev, 128))
      return msgl::fail(MSGL_ERR_UNSUPPORTED, "attention_variants: the wgmma prefill kernel needs a GPU of compute "
                                              "capability 9.0 (H100, H200) and a build with sm_90a");
  }
  MSGL_CHECK(decode == MSGL_ATTN_AUTO || decode == MSGL_ATTN_DECODE_SPLIT || decode == MSGL_ATTN_DECODE_NOSPLIT,
             "attention_variants: unknown decode variant");
  prefill_choice = prefill;
  decode_choice = decode;
  return MSGL_OK;
}
