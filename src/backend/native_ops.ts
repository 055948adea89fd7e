// The msgl_* C ABI (cuda/include/msgl.h) as bun:ffi symbols, and typed wrappers that check every status.
// Device pointers are plain numbers declared `ptr` (never BigInt on hot paths).
import { dlopen, FFIType, type Pointer } from "bun:ffi";

const { ptr, i32, f32, i64, u64, cstring } = FFIType;
const S = ptr; // stream handle

export const MSGL_SYMBOLS = {
  msgl_abi_version: { args: [], returns: i32 },
  msgl_last_error: { args: [], returns: cstring },
  msgl_embedding: { args: [ptr, ptr, ptr, i32, i32, i32, i32, S], returns: i32 },
  msgl_rmsnorm: { args: [ptr, ptr, ptr, i32, i32, f32, S], returns: i32 },
  msgl_add_rmsnorm: { args: [ptr, ptr, ptr, ptr, i32, i32, f32, S], returns: i32 },
  msgl_head_rmsnorm: { args: [ptr, ptr, i32, i32, i32, i32, f32, S], returns: i32 },
  msgl_rope: { args: [ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32, i32, i32, S], returns: i32 },
  msgl_gemm: { args: [ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32, S], returns: i32 },
  msgl_silu_mul: { args: [ptr, ptr, i32, i32, S], returns: i32 },
  msgl_gemm_silu_mul: { args: [ptr, ptr, ptr, i32, i32, i32, i32, S], returns: i32 },
  msgl_store_kv: { args: [ptr, ptr, ptr, ptr, ptr, i32, i32, i32, i32, S], returns: i32 },
  msgl_attention_prefill: {
    args: [ptr, ptr, ptr, ptr, ptr, i32, ptr, ptr, ptr, i32, i32, i32, i32, i32, i32, f32, S],
    returns: i32,
  },
  msgl_attention_decode: {
    args: [ptr, ptr, ptr, ptr, ptr, i32, ptr, ptr, i32, i32, i32, i32, i32, f32, ptr, i64, S],
    returns: i32,
  },
  msgl_attention_decode_workspace: { args: [i32, i32, i32, i32], returns: i64 },
  msgl_attention_variants: { args: [i32, i32], returns: i32 },
  msgl_qk_norm_rope_store: { args: [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32, f32, S], returns: i32 },
  msgl_scatter_tokens: { args: [ptr, ptr, ptr, i32, S], returns: i32 },
  msgl_gather_tokens: { args: [ptr, ptr, ptr, i32, S], returns: i32 },
  msgl_gather_rows: { args: [ptr, ptr, ptr, i32, i32, S], returns: i32 },
  msgl_argmax: { args: [ptr, ptr, i32, i32, S], returns: i32 },
  msgl_fill_random: { args: [ptr, i64, u64, f32, f32, S], returns: i32 },
  msgl_apply_penalties: { args: [ptr, i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, S], returns: i32 },
  msgl_add_sparse: { args: [ptr, i32, i32, ptr, ptr, ptr, S], returns: i32 },
  msgl_sample: { args: [ptr, ptr, i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, S], returns: i32 },
  msgl_logprobs: { args: [ptr, ptr, ptr, ptr, ptr, i32, i32, i32, S], returns: i32 },
} as const;

export type MsglLibrary = ReturnType<typeof dlopen<typeof MSGL_SYMBOLS>>["symbols"];

/** A device address (or host address on the CPU backend); 0 means "none" for optional arguments. */
export type DevicePtr = number;

const P = (p: DevicePtr) => p as unknown as Pointer;

/** Typed calls of the native ops on one stream; every non-zero status becomes an Error. */
export class NativeOps {
  constructor(
    private readonly lib: MsglLibrary,
    public stream: DevicePtr = 0,
  ) {}

  private check(status: number, op: string): void {
    if (status !== 0) throw new Error(`msgl_${op} failed (status ${status}): ${this.lib.msgl_last_error()}`);
  }

  embedding(out: DevicePtr, table: DevicePtr, ids: DevicePtr, tokens: number, hidden: number, vocabStart: number, vocabLocal: number): void {
    this.check(this.lib.msgl_embedding(P(out), P(table), P(ids), tokens, hidden, vocabStart, vocabLocal, P(this.stream)), "embedding");
  }

  rmsnorm(out: DevicePtr, x: DevicePtr, w: DevicePtr, rows: number, dim: number, eps: number): void {
    this.check(this.lib.msgl_rmsnorm(P(out), P(x), P(w), rows, dim, eps, P(this.stream)), "rmsnorm");
  }

  addRmsnorm(out: DevicePtr, residual: DevicePtr, x: DevicePtr, w: DevicePtr, rows: number, dim: number, eps: number): void {
    this.check(this.lib.msgl_add_rmsnorm(P(out), P(residual), P(x), P(w), rows, dim, eps, P(this.stream)), "add_rmsnorm");
  }

  headRmsnorm(x: DevicePtr, w: DevicePtr, tokens: number, heads: number, headDim: number, stride: number, eps: number): void {
    this.check(this.lib.msgl_head_rmsnorm(P(x), P(w), tokens, heads, headDim, stride, eps, P(this.stream)), "head_rmsnorm");
  }

  rope(q: DevicePtr, k: DevicePtr, positions: DevicePtr, cosSin: DevicePtr, tokens: number, qHeads: number, kHeads: number,
    headDim: number, rotaryDim: number, qStride: number, kStride: number): void {
    this.check(this.lib.msgl_rope(P(q), P(k), P(positions), P(cosSin), tokens, qHeads, kHeads, headDim, rotaryDim, qStride,
      kStride, P(this.stream)), "rope");
  }

  gemm(y: DevicePtr, x: DevicePtr, w: DevicePtr, bias: DevicePtr, m: number, n: number, k: number, xStride: number, outF32: boolean): void {
    this.check(this.lib.msgl_gemm(P(y), P(x), P(w), P(bias), m, n, k, xStride, outF32 ? 1 : 0, P(this.stream)), "gemm");
  }

  siluMul(out: DevicePtr, gateUp: DevicePtr, rows: number, inter: number): void {
    this.check(this.lib.msgl_silu_mul(P(out), P(gateUp), rows, inter, P(this.stream)), "silu_mul");
  }

  /** Up to this many rows the model runs gemmSiluMul instead of gemm + siluMul (decode batches of 1 and 2). */
  readonly gemmSiluMulMaxRows: number = 2;

  /** act = silu(x · w[:inter]ᵀ) · (x · w[inter:]ᵀ): gemm then siluMul, bit for bit, in one op. */
  gemmSiluMul(act: DevicePtr, x: DevicePtr, w: DevicePtr, m: number, inter: number, k: number, xStride: number): void {
    this.check(this.lib.msgl_gemm_silu_mul(P(act), P(x), P(w), m, inter, k, xStride, P(this.stream)), "gemm_silu_mul");
  }

  storeKv(kCache: DevicePtr, vCache: DevicePtr, k: DevicePtr, v: DevicePtr, slots: DevicePtr, tokens: number, kvDim: number,
    kStride: number, vStride: number): void {
    this.check(this.lib.msgl_store_kv(P(kCache), P(vCache), P(k), P(v), P(slots), tokens, kvDim, kStride, vStride,
      P(this.stream)), "store_kv");
  }

  attentionPrefill(out: DevicePtr, q: DevicePtr, kCache: DevicePtr, vCache: DevicePtr, pageTable: DevicePtr, pageStride: number,
    rows: DevicePtr, qoIndptr: DevicePtr, kvLens: DevicePtr, batch: number, tokens: number, qHeads: number, kvHeads: number,
    headDim: number, qStride: number, scale: number): void {
    this.check(this.lib.msgl_attention_prefill(P(out), P(q), P(kCache), P(vCache), P(pageTable), pageStride, P(rows),
      P(qoIndptr), P(kvLens), batch, tokens, qHeads, kvHeads, headDim, qStride, scale, P(this.stream)), "attention_prefill");
  }

  attentionDecode(out: DevicePtr, q: DevicePtr, kCache: DevicePtr, vCache: DevicePtr, pageTable: DevicePtr, pageStride: number,
    rows: DevicePtr, kvLens: DevicePtr, batch: number, qHeads: number, kvHeads: number, headDim: number, qStride: number,
    scale: number, workspace: DevicePtr, workspaceBytes: number): void {
    this.check(this.lib.msgl_attention_decode(P(out), P(q), P(kCache), P(vCache), P(pageTable), pageStride, P(rows), P(kvLens),
      batch, qHeads, kvHeads, headDim, qStride, scale, P(workspace), workspaceBytes, P(this.stream)), "attention_decode");
  }

  /** Bytes of scratch msgl_attention_decode needs at these sizes (0 on the CPU). */
  attentionDecodeWorkspace(batch: number, qHeads: number, headDim: number, pageStride: number): number {
    return Number(this.lib.msgl_attention_decode_workspace(batch, qHeads, headDim, pageStride));
  }

  /** The attention kernel variants (msgl.h's MSGL_ATTN_*) of this thread's later attention calls. */
  attentionVariants(prefill: number, decode: number): void {
    this.check(this.lib.msgl_attention_variants(prefill, decode), "attention_variants");
  }

  /** q/k RMSNorm (when qNorm/kNorm are non-zero), RoPE and KV store on a contiguous merged qkv, in place. */
  qkNormRopeStore(qkv: DevicePtr, qNorm: DevicePtr, kNorm: DevicePtr, positions: DevicePtr, cosSin: DevicePtr, kCache: DevicePtr,
    vCache: DevicePtr, slots: DevicePtr, tokens: number, qHeads: number, kvHeads: number, headDim: number, rotaryDim: number,
    eps: number): void {
    this.check(this.lib.msgl_qk_norm_rope_store(P(qkv), P(qNorm), P(kNorm), P(positions), P(cosSin), P(kCache), P(vCache), P(slots),
      tokens, qHeads, kvHeads, headDim, rotaryDim, eps, P(this.stream)), "qk_norm_rope_store");
  }

  scatterTokens(pool: DevicePtr, rows: DevicePtr, tokens: DevicePtr, n: number): void {
    this.check(this.lib.msgl_scatter_tokens(P(pool), P(rows), P(tokens), n, P(this.stream)), "scatter_tokens");
  }

  gatherTokens(out: DevicePtr, pool: DevicePtr, rows: DevicePtr, n: number): void {
    this.check(this.lib.msgl_gather_tokens(P(out), P(pool), P(rows), n, P(this.stream)), "gather_tokens");
  }

  gatherRows(out: DevicePtr, x: DevicePtr, indices: DevicePtr, n: number, dim: number): void {
    this.check(this.lib.msgl_gather_rows(P(out), P(x), P(indices), n, dim, P(this.stream)), "gather_rows");
  }

  argmax(out: DevicePtr, logits: DevicePtr, rows: number, vocab: number): void {
    this.check(this.lib.msgl_argmax(P(out), P(logits), rows, vocab, P(this.stream)), "argmax");
  }

  /** seed: a uint64 (a number for small seeds). */
  fillRandom(x: DevicePtr, n: number, seed: number | bigint, mean: number, std: number): void {
    this.check(this.lib.msgl_fill_random(P(x), n, BigInt(seed), mean, std, P(this.stream)), "fill_random");
  }

  applyPenalties(logits: DevicePtr, vocab: number, entries: number, rows: DevicePtr, tokens: DevicePtr, outputCounts: DevicePtr,
    presence: DevicePtr, frequency: DevicePtr, repetition: DevicePtr): void {
    this.check(this.lib.msgl_apply_penalties(P(logits), vocab, entries, P(rows), P(tokens), P(outputCounts), P(presence),
      P(frequency), P(repetition), P(this.stream)), "apply_penalties");
  }

  addSparse(logits: DevicePtr, vocab: number, entries: number, rows: DevicePtr, tokens: DevicePtr, values: DevicePtr): void {
    this.check(this.lib.msgl_add_sparse(P(logits), vocab, entries, P(rows), P(tokens), P(values), P(this.stream)), "add_sparse");
  }

  sample(out: DevicePtr, logits: DevicePtr, rows: number, vocab: number, temperature: DevicePtr, topK: DevicePtr, topP: DevicePtr,
    minP: DevicePtr, seeds: DevicePtr, steps: DevicePtr): void {
    this.check(this.lib.msgl_sample(P(out), P(logits), rows, vocab, P(temperature), P(topK), P(topP), P(minP), P(seeds), P(steps),
      P(this.stream)), "sample");
  }

  /** topIds / topLogprobs may be 0 when k = 0. */
  logprobs(chosenLogprob: DevicePtr, topIds: DevicePtr, topLogprobs: DevicePtr, logits: DevicePtr, chosen: DevicePtr, rows: number,
    vocab: number, k: number): void {
    this.check(this.lib.msgl_logprobs(P(chosenLogprob), P(topIds), P(topLogprobs), P(logits), P(chosen), rows, vocab, k,
      P(this.stream)), "logprobs");
  }
}
