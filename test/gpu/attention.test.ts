// The CUDA attention kernels (tensor-core prefill/extend and split-KV decode) against the CPU library on the same
// random inputs: ragged batches over cached prefixes, shuffled slots with stale page-table entries past kv_len, rows
// out of order, a merged-qkv q stride, head_dim 16..256, GQA groups 1..8 and beyond, and decode replayed from a
// CUDA graph with other kv_lens; every GPU kernel variant (--attn). The GPU rounds P to bf16 before P·V (the CPU keeps fp32): tolerance 2e-2 + 2e-2·|x|.
import { expect, test } from "bun:test";
import { DECODE_KERNELS, PREFILL_KERNELS, useAttentionKernels } from "../../src/backend/attention_kernels.ts";
import type { Backend } from "../../src/backend/backend.ts";
import { cuda } from "../../src/backend/cudart.ts";
import { f32ToBf16Bits } from "../../src/model/safetensors.ts";
import { readBf16 } from "../helpers/device_tensors.ts";
import { rng } from "../helpers/rng.ts";
import { cudaBackend, describeGpu, poison } from "./gpu.ts";
import { type Side, SIDES, type Twin, twinBuffers } from "./twins.ts";

// With MINISGL_GPU_TESTS_ON_CPU=1 both sides are the CPU library: tests of CUDA-only behaviour (graph capture,
// the split-KV workspace and the kernels' argument checks before any read) are skipped there.
const cpuOnBothSides = process.env.MINISGL_GPU_TESTS_ON_CPU === "1";
const testGpuOnly = cpuOnBothSides ? test.skip : test;
const GPU_ONLY = cpuOnBothSides ? " [skipped: needs a real GPU, MINISGL_GPU_TESTS_ON_CPU=1]" : "";

const STALE_SLOT = 0x7fffffff; // page-table entries past kv_len: reading one would fault

interface Case {
  qh: number;
  kvh: number;
  hd: number;
  newTokens: number[]; // per request; decode: all 1
  kvLens: number[];
  pageStride?: number;
  scale?: number;
}

/** "" when every |gpu − cpu| ≤ 2e-2 + 2e-2·|cpu| (and gpu is not NaN), else the worst element. */
function close(gpu: Float32Array, cpu: Float32Array, width: number): string {
  let worst = 0, at = -1;
  for (let i = 0; i < cpu.length; i++) {
    const e = Math.abs(gpu[i] - cpu[i]) / (2e-2 + 2e-2 * Math.abs(cpu[i]));
    if (!(e <= worst)) [worst, at] = [Number.isNaN(e) ? Infinity : e, i];
  }
  if (worst <= 1) return "";
  const [row, col] = [Math.floor(at / width), at % width];
  return `worst at row ${row} (token·q_heads + head), dim ${col}: gpu ${gpu[at]}, cpu ${cpu[at]} (${worst.toFixed(2)}× the tolerance)`;
}

/** A random permutation of [0, n). */
function shuffled(n: number, r: () => number): Int32Array {
  const a = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

describeGpu("CUDA attention matches the CPU library", (gpu: Backend, cpu: Backend) => {
  const { backends, own, alloc, put } = twinBuffers(gpu, cpu);
  const randomBf16 = (n: number, r: () => number, scale: number) =>
    Uint16Array.from({ length: n }, () => f32ToBf16Bits((2 * r() - 1) * scale));

  /** Inputs of one case on both backends: merged-qkv q, K/V caches, shuffled slots, rows out of order. */
  function setup(c: Case, seed: number) {
    const r = rng(seed);
    const batch = c.kvLens.length, kvDim = c.kvh * c.hd, qStride = (c.qh + 2 * c.kvh) * c.hd;
    const tokens = c.newTokens.reduce((a, b) => a + b, 0);
    const slots = c.kvLens.reduce((a, b) => a + b, 0) + 37;
    const pageStride = c.pageStride ?? Math.max(...c.kvLens) + 7;
    const rowsOf = shuffled(batch + 2, r).slice(0, batch); // two page-table rows stay unused
    const pageTable = new Int32Array((batch + 2) * pageStride).fill(STALE_SLOT);
    const perm = shuffled(slots, r);
    let next = 0;
    c.kvLens.forEach((len, b) => {
      for (let j = 0; j < len; j++) pageTable[rowsOf[b] * pageStride + j] = perm[next++];
    });
    const indptr = Int32Array.from([0, ...c.newTokens.map((_, b) => c.newTokens.slice(0, b + 1).reduce((a, x) => a + x, 0))]);
    // The ops read page_table[rows[b] * page_stride + j] for every j < kv_len: a case outside that would read a
    // stale entry (an out-of-range slot) and crash the process instead of failing.
    c.kvLens.forEach((len, b) => {
      if (!(c.newTokens[b] >= 0 && c.newTokens[b] <= len && len <= pageStride))
        throw new Error(`bad case: request ${b} has ${c.newTokens[b]} new tokens, kv_len ${len}, page_stride ${pageStride}`);
    });
    return {
      batch, tokens, qStride, pageStride, indptr,
      q: put(randomBf16(Math.max(tokens, 1) * qStride, r, 2)),
      k: put(randomBf16(slots * kvDim, r, 1)),
      v: put(randomBf16(slots * kvDim, r, 1)),
      pageTable: put(pageTable),
      rows: put(rowsOf),
      qoIndptr: put(indptr),
      kvLens: put(Int32Array.from(c.kvLens)),
      scale: c.scale ?? 1 / Math.sqrt(c.hd),
    };
  }

  function outputs(c: Case, tokens: number): { out: Twin; read: (s: Side) => Float32Array } {
    const n = tokens * c.qh * c.hd, out = alloc(n * 2);
    for (const s of SIDES) poison(backends[s], out[s], n * 2);
    return { out, read: (s) => readBf16(backends[s], out[s], n) };
  }

  // Every kernel variant of the GPU side (--attn) against the one CPU kernel; the CPU library has only "auto".
  // wgmma runs on compute capability 9.0 only (msgl_attention_variants refuses it elsewhere).
  const hopper = gpu.kind === "cuda" && cuda.computeCapabilityMajor(0) === 9; // cudaBackend() is device 0
  const prefillVariants = gpu.kind === "cuda" ? PREFILL_KERNELS.filter((k) => k !== "auto" && (k !== "wgmma" || hopper)) : (["auto"] as const);
  if (gpu.kind === "cuda" && !hopper) console.log("attention: skipping the wgmma prefill variant [needs compute capability 9.0]");
  const decodeVariants = gpu.kind === "cuda" ? DECODE_KERNELS.filter((k) => k !== "auto") : (["auto"] as const);

  function prefill(name: string, c: Case, seed: number): void {
    const x = setup(c, seed);
    const { out, read } = outputs(c, x.tokens);
    const call = (s: Side) => backends[s].ops.attentionPrefill(out[s], x.q[s], x.k[s], x.v[s], x.pageTable[s], x.pageStride,
      x.rows[s], x.qoIndptr[s], x.kvLens[s], x.batch, x.tokens, c.qh, c.kvh, c.hd, x.qStride, x.scale);
    call("cpu");
    for (const variant of prefillVariants) {
      useAttentionKernels(gpu, { prefill: variant, decode: "auto" });
      poison(gpu, out.gpu, x.tokens * c.qh * c.hd * 2);
      call("gpu");
      expect(`${name} [${variant}]: ${close(read("gpu"), read("cpu"), c.hd)}`).toBe(`${name} [${variant}]: `);
    }
    useAttentionKernels(gpu); // later tests expect auto's kernels
  }

  /** Decode on both sides; with `lens2`, again on the same buffers and integers with other kv_lens contents. */
  function decode(name: string, c: Case, seed: number, lens2?: number[]): void {
    const x = setup(c, seed);
    // The page table holds valid slots only for j < c.kvLens[b]; the second lengths must stay within them.
    if (lens2 && !lens2.every((l, b) => l >= 1 && l <= c.kvLens[b]))
      throw new Error(`bad case: second kv_lens [${lens2}] must be in [1, first kv_lens [${c.kvLens}]]`);
    const wsBytes = gpu.ops.attentionDecodeWorkspace(x.batch, c.qh, c.hd, x.pageStride);
    const ws = wsBytes > 0 ? own(gpu, wsBytes) : 0;
    for (const lens of lens2 ? [c.kvLens, lens2] : [c.kvLens]) {
      const { out, read } = outputs(c, x.batch);
      const call = (s: Side) => backends[s].ops.attentionDecode(out[s], x.q[s], x.k[s], x.v[s], x.pageTable[s], x.pageStride,
        x.rows[s], x.kvLens[s], x.batch, c.qh, c.kvh, c.hd, x.qStride, x.scale, s === "gpu" ? ws : 0, s === "gpu" ? wsBytes : 0);
      for (const s of SIDES) backends[s].upload(x.kvLens[s], Int32Array.from(lens));
      call("cpu");
      for (const variant of decodeVariants) {
        useAttentionKernels(gpu, { prefill: "auto", decode: variant });
        poison(gpu, out.gpu, x.batch * c.qh * c.hd * 2);
        call("gpu");
        const label = `${name} [${variant}] [${lens.slice(0, 4)}...]`;
        expect(`${label}: ${close(read("gpu"), read("cpu"), c.hd)}`).toBe(`${label}: `);
      }
    }
    useAttentionKernels(gpu);
  }

  const r = rng(4242);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

  for (const hd of [16, 32, 64, 128, 256]) {
    for (const group of [1, 2, 4, 8]) {
      test(`prefill/extend head_dim ${hd}, group ${group}: ragged batch over cached prefixes`, () => {
        // A fresh prompt, two extends over cached prefixes, and a request of one token with kv_len 1.
        const small = hd === 256 ? 2 : 1;
        const newTokens = [int(1, 300 / small), int(1, 300 / small), int(1, 40), 1];
        const prefixes = [0, int(0, 2000 / small), int(100, 2000 / small), 0];
        const c = { qh: 2 * group, kvh: 2, hd, newTokens, kvLens: newTokens.map((n, b) => n + prefixes[b]) };
        prefill(`hd ${hd} group ${group} new ${newTokens} kv ${c.kvLens}`, c, hd * 10 + group);
      });
    }
  }

  test("prefill: big groups (heads of one kv head split over tiles), empty requests, odd groups", () => {
    prefill("group 160", { qh: 160, kvh: 1, hd: 128, newTokens: [40, 3], kvLens: [300, 3] }, 1);
    prefill("group 64, hd 256", { qh: 64, kvh: 1, hd: 256, newTokens: [20, 9], kvLens: [120, 500] }, 2);
    prefill("group 7", { qh: 21, kvh: 3, hd: 64, newTokens: [130, 17], kvLens: [130, 900] }, 3);
    prefill("empty requests", { qh: 8, kvh: 2, hd: 64, newTokens: [0, 5, 0, 7], kvLens: [10, 5, 0, 300] }, 4);
  });

  test("prefill: one long request over a long prefix", () => {
    prefill("1500 over 2500", { qh: 8, kvh: 2, hd: 128, newTokens: [1500], kvLens: [4000] }, 5);
  });

  test("prefill and decode: negative and zero scale", () => {
    prefill("scale -0.2", { qh: 16, kvh: 4, hd: 128, newTokens: [100, 7], kvLens: [300, 7], scale: -0.2 }, 6);
    prefill("scale 0", { qh: 8, kvh: 4, hd: 64, newTokens: [50], kvLens: [90], scale: 0 }, 7);
    decode("scale -0.1", { qh: 32, kvh: 8, hd: 128, newTokens: [1, 1], kvLens: [300, 5000], scale: -0.1 }, 8);
  });

  for (const [batch, maxLen] of [[1, 9000], [3, 9000], [17, 1500], [64, 1500]]) {
    for (const [qh, kvh, hd] of [[8, 8, 64], [32, 8, 128], [16, 4, 256], [32, 2, 32], [21, 3, 16]]) {
      test(`decode batch ${batch}, ${qh}/${kvh} heads, head_dim ${hd}, kv_len up to ${maxLen}; again with other kv_lens`, () => {
        const lens = Array.from({ length: batch }, () => int(1, hd === 256 ? maxLen / 4 : maxLen));
        lens[0] = 1;
        const c = { qh, kvh, hd, newTokens: lens.map(() => 1), kvLens: lens };
        decode(`decode ${batch} ${qh}/${kvh} ${hd}`, c, batch * 1000 + hd, lens.map((l) => Math.max(1, Math.floor(l / int(1, 50)))));
      });
    }
  }

  test("decode: lengths far below page_stride leave most splits empty", () => {
    // The second lengths stay within the first (the page table has slots only below those): [3, 2, 70] -> [1, 2, 1].
    const c = { qh: 32, kvh: 8, hd: 128, newTokens: [1, 1, 1], kvLens: [3, 2, 70], pageStride: 20000 };
    decode("short over a long page_stride", c, 9, [1, 2, 1]);
  });

  testGpuOnly(`decode replayed from a CUDA graph with other kv_lens contents${GPU_ONLY}`, () => {
    const be = cudaBackend();
    const c = { qh: 32, kvh: 8, hd: 128, newTokens: [1, 1, 1, 1], kvLens: [4000, 1, 900, 2500] };
    const x = setup(c, 10);
    const wsBytes = gpu.ops.attentionDecodeWorkspace(x.batch, c.qh, c.hd, x.pageStride);
    const ws = wsBytes > 0 ? own(gpu, wsBytes) : 0;
    const { out, read } = outputs(c, x.batch);
    const call = (s: Side) => backends[s].ops.attentionDecode(out[s], x.q[s], x.k[s], x.v[s], x.pageTable[s], x.pageStride,
      x.rows[s], x.kvLens[s], x.batch, c.qh, c.kvh, c.hd, x.qStride, x.scale, s === "gpu" ? ws : 0, s === "gpu" ? wsBytes : 0);
    be.synchronize();
    cuda.beginCapture(be.stream);
    call("gpu");
    const graph = cuda.endCapture(be.stream), exec = cuda.instantiate(graph);
    try {
      for (const lens of [[4000, 1, 900, 2500], [7, 1, 3, 1], [3999, 1, 899, 1]]) {
        for (const s of SIDES) backends[s].upload(x.kvLens[s], Int32Array.from(lens));
        poison(be, out.gpu, x.batch * c.qh * c.hd * 2);
        cuda.launchGraph(exec, be.stream);
        call("cpu");
        expect(`[${lens}]: ${close(read("gpu"), read("cpu"), c.hd)}`).toBe(`[${lens}]: `);
      }
    } finally {
      cuda.destroyGraph(graph, exec);
    }
  });

  testGpuOnly(`errors: unsupported head_dim, bad shapes, a too small workspace${GPU_ONLY}`, () => {
    expect(() => gpu.ops.attentionPrefill(0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 1, 4, 4, 96, 384, 1)).toThrow(/attention_prefill: head_dim/);
    expect(() => gpu.ops.attentionDecode(0, 0, 0, 0, 0, 8, 0, 0, 1, 4, 4, 80, 320, 1, 0, 0)).toThrow(/attention_decode: head_dim/);
    expect(() => gpu.ops.attentionDecode(0, 0, 0, 0, 0, 4, 0, 0, 0, 6, 4, 16, 16, 1, 0, 0)).toThrow(/attention_decode: bad shape/);
    const c = { qh: 32, kvh: 8, hd: 128, newTokens: [1], kvLens: [5000] };
    const x = setup(c, 11);
    expect(gpu.ops.attentionDecodeWorkspace(1, 32, 128, x.pageStride)).toBeGreaterThan(0); // one request splits
    const out = alloc(c.qh * c.hd * 2);
    expect(() => gpu.ops.attentionDecode(out.gpu, x.q.gpu, x.k.gpu, x.v.gpu, x.pageTable.gpu, x.pageStride, x.rows.gpu,
      x.kvLens.gpu, 1, c.qh, c.kvh, c.hd, x.qStride, x.scale, 0, 0)).toThrow(/attention_decode: workspace/);
  });
});
