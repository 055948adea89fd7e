// Programmatic dependent launch (launch_early in cuda/kernels/common.cuh) is engaged: two decode kernels
// captured into a CUDA graph are joined by a programmatic edge on sm_90 and newer (a plain edge on older
// GPUs or with MINISGL_PDL=0), and the replayed graph computes what the eager calls do. Kernels that load
// before their wait (decode attention's K/V tiles) must leave out what the kernel before them writes.
import { expect, test } from "bun:test";
import type { Backend } from "../../src/backend/backend.ts";
import { cuda } from "../../src/backend/cudart.ts";
import { f32ToBf16Bits } from "../../src/model/safetensors.ts";
import { rng } from "../helpers/rng.ts";
import { cudaBackend, describeGpu } from "./gpu.ts";

const cpuOnBothSides = process.env.MINISGL_GPU_TESTS_ON_CPU === "1";
const GPU_ONLY = cpuOnBothSides ? " [skipped: needs a real GPU, MINISGL_GPU_TESTS_ON_CPU=1]" : "";
const PROGRAMMATIC = 1; // cudaGraphDependencyTypeProgrammatic

function randomBf16(n: number, seed: number): Uint16Array {
  const r = rng(seed);
  return Uint16Array.from({ length: n }, () => f32ToBf16Bits(2 * r() - 1));
}

describeGpu("programmatic dependent launch", (_gpu: Backend) => {
  (cpuOnBothSides ? test.skip : test)(`RMSNorm → GEMV (one row) in a CUDA graph: a programmatic edge on sm_90+${GPU_ONLY}`, () => {
    const be = cudaBackend();
    const dim = 256, n = 64;
    const x = be.alloc(dim * 2), norm = be.alloc(dim * 2), normed = be.alloc(dim * 2), w = be.alloc(n * dim * 2);
    const eager = be.alloc(n * 2), replayed = be.alloc(n * 2);
    try {
      be.upload(x, randomBf16(dim, 1));
      be.upload(norm, randomBf16(dim, 2));
      be.upload(w, randomBf16(n * dim, 3));
      const step = (y: number) => {
        be.ops.rmsnorm(normed, x, norm, 1, dim, 1e-6);
        be.ops.gemm(y, normed, w, 0, 1, n, dim, dim, false); // one row: the GEMV, not cuBLASLt
      };
      step(eager);
      be.synchronize();
      cuda.beginCapture(be.stream);
      step(replayed);
      const graph = cuda.endCapture(be.stream);
      const exec = cuda.instantiate(graph);
      try {
        const engaged = cuda.computeCapabilityMajor(be.device) >= 9 && process.env.MINISGL_PDL !== "0";
        expect(cuda.graphEdgeTypes(graph)).toEqual([engaged ? PROGRAMMATIC : 0]);
        be.fill(replayed, 0xff, n * 2);
        cuda.launchGraph(exec, be.stream);
        be.synchronize();
        const read = (p: number) => {
          const bits = new Uint16Array(n);
          be.download(bits, p);
          return bits;
        };
        expect(read(replayed)).toEqual(read(eager));
      } finally {
        cuda.destroyGraph(graph, exec);
      }
    } finally {
      for (const p of [x, norm, normed, w, eager, replayed]) be.free(p);
    }
  });

  // A GEMV that writes the newest key's K row of request 0 stands in for msgl_qk_norm_rope_store: it runs long
  // enough that a decode kernel reading that row before its wait would see the poison left there.
  (cpuOnBothSides ? test.skip : test)(`a K row written by the kernel before decode attention is read after the wait${GPU_ONLY}`, () => {
    const be = cudaBackend();
    const qh = 32, kvh = 8, hd = 128, stride = 1024, kvLens = [1024, 700, 65], batch = kvLens.length, inner = 16384;
    const kvDim = kvh * hd, slots = batch * stride, qElems = batch * qh * hd;
    const newestSlot = kvLens[0] - 1; // request 0's keys sit at slots [0, stride)
    const alloc = (bytes: number) => be.alloc(bytes);
    const q = alloc(qElems * 2), kc = alloc(slots * kvDim * 2), vc = alloc(slots * kvDim * 2), table = alloc(slots * 4);
    const rows = alloc(batch * 4), lens = alloc(batch * 4), x = alloc(inner * 2), w = alloc(kvDim * inner * 2);
    const wsBytes = be.ops.attentionDecodeWorkspace(batch, qh, hd, stride), ws = alloc(Math.max(wsBytes, 16));
    const eager = alloc(qElems * 2), replayed = alloc(qElems * 2);
    const poison = new Uint16Array(kvDim).fill(0x4480); // 1024.0
    try {
      be.upload(q, randomBf16(qElems, 4));
      be.upload(kc, randomBf16(slots * kvDim, 5));
      be.upload(vc, randomBf16(slots * kvDim, 6));
      be.upload(x, randomBf16(inner, 7));
      be.upload(w, randomBf16(kvDim * inner, 8));
      be.upload(table, Int32Array.from({ length: slots }, (_, i) => i));
      be.upload(rows, Int32Array.from(kvLens, (_, r) => r));
      be.upload(lens, Int32Array.from(kvLens));
      const newestRow = kc + newestSlot * kvDim * 2;
      const poisonRow = () => be.upload(newestRow, poison);
      const writeRow = () => be.ops.gemm(newestRow, x, w, 0, 1, kvDim, inner, inner, false);
      const attend = (out: number) =>
        be.ops.attentionDecode(out, q, kc, vc, table, stride, rows, lens, batch, qh, kvh, hd, qh * hd, 1 / Math.sqrt(hd), ws, wsBytes);
      const read = (p: number) => {
        const bits = new Uint16Array(qElems);
        be.download(bits, p);
        return bits;
      };
      poisonRow();
      writeRow();
      be.synchronize(); // the reference: attention starts after the row is written
      attend(eager);
      be.synchronize();
      const expected = read(eager);
      cuda.beginCapture(be.stream);
      writeRow();
      attend(replayed);
      const graph = cuda.endCapture(be.stream);
      const exec = cuda.instantiate(graph);
      try {
        const engaged = cuda.computeCapabilityMajor(be.device) >= 9 && process.env.MINISGL_PDL !== "0";
        expect(new Set(cuda.graphEdgeTypes(graph))).toEqual(new Set([engaged ? PROGRAMMATIC : 0]));
        for (let i = 0; i < 10; i++) {
          poisonRow();
          be.fill(replayed, 0xff, qElems * 2);
          cuda.launchGraph(exec, be.stream);
          be.synchronize();
          expect(read(replayed)).toEqual(expected);
        }
      } finally {
        cuda.destroyGraph(graph, exec);
      }
    } finally {
      for (const p of [q, kc, vc, table, rows, lens, x, w, ws, eager, replayed]) be.free(p);
    }
  });
});
