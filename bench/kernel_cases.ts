// The kernel micro-benchmark cases: our ops at the real shapes of Qwen3-8B and Qwen3-0.6B (the decode and
// prefill GEMMs, decode attention at batch × context, causal prefill attention, sampling over the full
// vocabulary), each with the bytes it must move and the FLOPs it must do (for % of roofline). The same
// list, as JSON (`bun run bench:kernels --print-cases`), drives bench/torch_ref.py, so both time the same
// shapes. "smoke" sizes keep a CPU run to seconds.

import type { AttentionKernels } from "../src/backend/attention_kernels.ts";

export type KernelOp = "rmsnorm" | "gemm" | "attention_decode" | "attention_prefill" | "argmax" | "sample";

export interface KernelCase {
  name: string; // unique, e.g. "gemm qwen3-8b gate_up m=64"
  op: KernelOp;
  model: string;
  shape: Record<string, number>;
  bytes: number; // minimum bytes read + written
  flops: number;
  attention?: AttentionKernels; // attention ops: the kernel variants timed (default auto)
  torchCase?: string; // a variant's base case, whose PyTorch timing it shares (bench/torch_ref.py skips it)
}

interface ModelShape {
  name: string;
  hidden: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
}

const QWEN3_8B: ModelShape = { name: "qwen3-8b", hidden: 4096, qHeads: 32, kvHeads: 8, headDim: 128, intermediate: 12288, vocab: 151936 };
const QWEN3_06B: ModelShape = { name: "qwen3-0.6b", hidden: 1024, qHeads: 16, kvHeads: 8, headDim: 128, intermediate: 3072, vocab: 151936 };
const BF16 = 2;
const F32 = 4;

function rmsnorm(m: ModelShape, rows: number): KernelCase {
  return {
    name: `rmsnorm ${m.name} rows=${rows}`, op: "rmsnorm", model: m.name, shape: { rows, dim: m.hidden },
    bytes: BF16 * (2 * rows * m.hidden + m.hidden), flops: 4 * rows * m.hidden,
  };
}

function gemm(m: ModelShape, layer: string, rows: number, n: number, k: number, outF32 = false): KernelCase {
  return {
    name: `gemm ${m.name} ${layer} m=${rows}`, op: "gemm", model: m.name, shape: { m: rows, n, k, out_f32: outF32 ? 1 : 0 },
    bytes: BF16 * (rows * k + n * k) + (outF32 ? F32 : BF16) * rows * n, flops: 2 * rows * n * k,
  };
}

function modelGemms(m: ModelShape, rowsList: number[], lmHeadRows: number[]): KernelCase[] {
  const q = m.qHeads * m.headDim;
  const kv = m.kvHeads * m.headDim;
  const out: KernelCase[] = [];
  for (const rows of rowsList) {
    out.push(gemm(m, "qkv", rows, q + 2 * kv, m.hidden), gemm(m, "o", rows, m.hidden, q),
      gemm(m, "gate_up", rows, 2 * m.intermediate, m.hidden), gemm(m, "down", rows, m.hidden, m.intermediate));
  }
  for (const rows of lmHeadRows) out.push(gemm(m, "lm_head", rows, m.vocab, m.hidden, true));
  return out;
}

function attentionDecode(m: ModelShape, batch: number, context: number): KernelCase {
  const kvBytes = 2 * batch * context * m.kvHeads * m.headDim * BF16;
  return {
    name: `attention_decode ${m.name} b=${batch} l=${context}`, op: "attention_decode", model: m.name,
    shape: { batch, context, q_heads: m.qHeads, kv_heads: m.kvHeads, head_dim: m.headDim },
    bytes: kvBytes + 2 * batch * m.qHeads * m.headDim * BF16, flops: 4 * batch * m.qHeads * context * m.headDim,
  };
}

function attentionPrefill(m: ModelShape, seq: number): KernelCase {
  return {
    name: `attention_prefill ${m.name} s=${seq}`, op: "attention_prefill", model: m.name,
    shape: { seq, q_heads: m.qHeads, kv_heads: m.kvHeads, head_dim: m.headDim },
    bytes: seq * (2 * m.qHeads + 2 * m.kvHeads) * m.headDim * BF16,
    flops: (4 * m.qHeads * m.headDim * seq * seq) / 2, // causal: half of the full QKᵀ and PV
  };
}

/** The same case on other attention kernels than auto's (--attn). */
function variant(c: KernelCase, attention: AttentionKernels): KernelCase {
  const names = [attention.prefill, attention.decode].filter((n) => n !== "auto").join(",");
  return { ...c, name: `${c.name} [${names}]`, attention, torchCase: c.name };
}

function argmax(m: ModelShape, batch: number): KernelCase {
  return { name: `argmax b=${batch}`, op: "argmax", model: m.name, shape: { batch, vocab: m.vocab }, bytes: F32 * batch * m.vocab, flops: batch * m.vocab };
}

/** Temperature 0.6 with top-k 20 and top-p 0.95 (Qwen3's recommended sampling), or top-p alone (top_k 0). */
function sample(m: ModelShape, batch: number, topK: number): KernelCase {
  return {
    name: `sample ${topK ? `top_k=${topK} ` : ""}top_p=0.95 b=${batch}`, op: "sample", model: m.name,
    shape: { batch, vocab: m.vocab, temperature: 0.6, top_k: topK, top_p: 0.95 }, bytes: F32 * batch * m.vocab, flops: 5 * batch * m.vocab,
  };
}

export function kernelCases(sizes: "full" | "smoke"): KernelCase[] {
  if (sizes === "smoke") {
    const m = QWEN3_06B;
    return [
      rmsnorm(m, 64), ...modelGemms(m, [1, 16], [1]), attentionDecode(m, 4, 256), attentionPrefill(m, 256), argmax(m, 4), sample(m, 4, 20),
      sample(m, 4, 0),
    ];
  }
  return [
    ...[QWEN3_06B, QWEN3_8B].flatMap((m) => [rmsnorm(m, 64), rmsnorm(m, 4096)]),
    ...[QWEN3_06B, QWEN3_8B].flatMap((m) => modelGemms(m, [1, 64, 256, 4096], [1, 64, 256])),
    attentionDecode(QWEN3_8B, 1, 1024), attentionDecode(QWEN3_8B, 64, 1024), attentionDecode(QWEN3_8B, 256, 1024),
    attentionDecode(QWEN3_8B, 64, 4096), attentionDecode(QWEN3_06B, 64, 1024), attentionDecode(QWEN3_06B, 256, 1024),
    ...[512, 1024, 2048, 4096, 8192, 16384].map((s) => attentionPrefill(QWEN3_8B, s)),
    ...(["fa2-m128", "fa2-m64", "wgmma"] as const).flatMap((prefill) =>
      [512, 1024, 2048, 4096, 8192, 16384].map((s) => variant(attentionPrefill(QWEN3_8B, s), { prefill, decode: "auto" }))),
    ...[[1, 1024], [64, 1024], [256, 1024], [64, 4096]].map(([b, l]) => variant(attentionDecode(QWEN3_8B, b, l), { prefill: "auto", decode: "nosplit" })),
    ...[1, 64, 256].flatMap((b) => [argmax(QWEN3_8B, b), sample(QWEN3_8B, b, 20), sample(QWEN3_8B, b, 0)]),
  ];
}
