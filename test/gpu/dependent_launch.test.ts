// Programmatic dependent launch (launch_early in cuda/kernels/common.cuh) is engaged: two decode kernels
// captured into a CUDA graph are joined by a programmatic edge on sm_90 and newer (a plain edge on older
// GPUs or with MINISGL_PDL=0), and the replayed graph computes what the eager calls do.
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
});
