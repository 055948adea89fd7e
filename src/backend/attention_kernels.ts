// `--attn prefill,decode`: which of our attention kernel variants the CUDA backend runs (msgl_attention_variants
// in cuda/include/msgl.h describes them). The index of each name is its msgl.h value; "auto" (0) is the
// variant measured fastest on the GPU. The CPU backend has one kernel of each kind and takes only "auto".
import type { Backend } from "./backend.ts";

export const PREFILL_KERNELS = ["auto", "fa2-m128", "fa2-m64", "wgmma"] as const;
export const DECODE_KERNELS = ["auto", "split", "nosplit"] as const;

export interface AttentionKernels {
  prefill: (typeof PREFILL_KERNELS)[number];
  decode: (typeof DECODE_KERNELS)[number];
}

export const AUTO_ATTENTION: AttentionKernels = { prefill: "auto", decode: "auto" };
export const ATTENTION_FLAG_HELP =
  `Attention kernels (cuda): auto, or prefill,decode with prefill ${PREFILL_KERNELS.join("|")} and decode ${DECODE_KERNELS.join("|")}`;

/** "auto", or "prefill,decode" (either may be "auto"). */
export function parseAttentionKernels(text: string): AttentionKernels {
  if (text === "auto") return AUTO_ATTENTION;
  const [prefill, decode, ...rest] = text.split(",");
  const isPrefill = (s: string): s is AttentionKernels["prefill"] => (PREFILL_KERNELS as readonly string[]).includes(s);
  const isDecode = (s: string): s is AttentionKernels["decode"] => (DECODE_KERNELS as readonly string[]).includes(s);
  if (rest.length > 0 || decode === undefined || !isPrefill(prefill) || !isDecode(decode)) {
    throw new Error(`--attn must be auto or prefill,decode with prefill one of ${PREFILL_KERNELS.join(", ")} and decode one of ` +
      `${DECODE_KERNELS.join(", ")} (got ${JSON.stringify(text)})`);
  }
  return { prefill, decode };
}

/** For every later attention call of this thread on `backend`. */
export function useAttentionKernels(backend: Backend, k: AttentionKernels = AUTO_ATTENTION): void {
  if (backend.kind !== "cuda" && (k.prefill !== "auto" || k.decode !== "auto")) {
    throw new Error(`--attn ${k.prefill},${k.decode}: the CPU backend has one attention kernel of each kind (only auto)`);
  }
  backend.ops.attentionVariants(PREFILL_KERNELS.indexOf(k.prefill), DECODE_KERNELS.indexOf(k.decode));
}
