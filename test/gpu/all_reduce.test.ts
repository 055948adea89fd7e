// The all-reduce of a rank group as the model uses it: every size a Qwen3 decode or prefill step makes, back
// to back with no wait in between (the peer path's staging buffers alternate), against the sum in rank order
// computed here. With 2 ranks every path (peer kernel, NCCL, the CPU twin) rounds once, so the bits must match.
// The fused all-reduce + add + RMSNorm must equal the two separate calls bit for bit, and so must the
// row-parallel GEMV fused into it (the all-reduce reading each GEMV output as it is written).
import { expect, test } from "bun:test";
import { createRankGroup } from "../../src/engine/rank_group.ts";
import { PEER_CAPACITY_BYTES } from "../../src/backend/peer_all_reduce.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../src/model/safetensors.ts";
import { type AllReduceJob, inputSeed } from "../helpers/all_reduce_worker.ts";
import { rng } from "../helpers/rng.ts";
import { describeGpus } from "./gpu.ts";

const RANKS = 2;
// 8 values; one 4096-wide token; 64 and 256 tokens; exactly the peer capacity; above it (NCCL); repeated so
// each staging buffer is reused several times.
const SIZES = [8, 4096, 64 * 4096, 256 * 4096, PEER_CAPACITY_BYTES / 2, PEER_CAPACITY_BYTES / 2 + 4096 * 8];
const COUNTS = [...SIZES, ...SIZES.toReversed(), ...SIZES];

function input(rank: number, index: number, n: number): Float32Array {
  const r = rng(inputSeed(rank, index));
  return Float32Array.from({ length: n }, () => bf16BitsToF32(f32ToBf16Bits((2 * r() - 1) * 4)));
}

interface RankResult {
  sums: Float32Array[];
  peer: boolean;
  fused: { applied: boolean; mismatches: number }[];
  gemm: { applied: boolean; mismatches: number }[];
}
// Qwen3-8B's hidden size; 1 to 256 tokens, and one batch above the peer capacity (NCCL + the separate op).
const FUSED_DIM = 4096;
const FUSED_ROWS = [1, 3, 64, 256, PEER_CAPACITY_BYTES / 2 / FUSED_DIM + 8];
// Qwen3-8B's o_proj and down_proj at TP 2 for 1 and 2 tokens (the GEMV), and 3 tokens (the separate calls).
const GEMM_SHAPES: [number, number][] = [[1, 2048], [1, 6144], [2, 2048], [2, 6144], [3, 2048]];

async function runGroup(device: "cpu" | "cuda"): Promise<RankResult[]> {
  const group = createRankGroup(RANKS, { fault: null, timeoutMs: 60_000 });
  const workers = Array.from({ length: RANKS }, () => new Worker(new URL("../helpers/all_reduce_worker.ts", import.meta.url).href));
  try {
    return await Promise.all(workers.map((w, rank) => new Promise<RankResult>((resolve, reject) => {
      w.onmessage = (e) => (e.data.type === "sums" ? resolve(e.data) : reject(new Error(e.data.message)));
      w.onerror = (e) => reject(new Error(`rank ${rank} crashed: ${e.message}`));
      const job: AllReduceJob = { device, rank, group, counts: COUNTS, fusedRows: FUSED_ROWS, fusedDim: FUSED_DIM, gemmShapes: GEMM_SHAPES };
      w.postMessage(job);
    })));
  } finally {
    for (const w of workers) w.terminate();
  }
}

describeGpus("all-reduce of a 2-rank group", RANKS, (device) => {
  test("every size, back to back, equals the sum in rank order on every rank", async () => {
    const ranks = await runGroup(device);
    if (device === "cuda") expect(ranks.map((r) => r.peer)).toEqual([true, true]); // the GPUs of one node have peer access
    COUNTS.forEach((n, i) => {
      const a = input(0, i, n), b = input(1, i, n);
      let mismatches = 0;
      for (let j = 0; j < n; j++) {
        const want = bf16BitsToF32(f32ToBf16Bits(Math.fround(a[j] + b[j])));
        if (ranks[0].sums[i][j] !== want || ranks[1].sums[i][j] !== want) mismatches++;
      }
      expect({ count: n, mismatches }).toEqual({ count: n, mismatches: 0 });
    });
    // On GPUs the fused op runs wherever the rows fit the peer capacity (all but the last case); the CPU twin
    // has none, so there both sides are the separate calls.
    const fits = (rows: number) => device === "cuda" && rows * FUSED_DIM * 2 <= PEER_CAPACITY_BYTES;
    for (const r of ranks) expect(r.fused).toEqual(FUSED_ROWS.map((rows) => ({ applied: fits(rows), mismatches: 0 })));
    for (const r of ranks) expect(r.gemm).toEqual(GEMM_SHAPES.map(([rows]) => ({ applied: device === "cuda" && rows <= 2, mismatches: 0 })));
  });
});
