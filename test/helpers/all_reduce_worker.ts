// One rank of a group in the all-reduce test: uploads its inputs (randomBf16 with seed = its rank · 1000 +
// the buffer's index), all-reduces every buffer back to back without waiting in between, and posts the sums
// and whether the peer-access path was available. Then, for each row count, the fused all-reduce + residual
// add + RMSNorm where the communicator has one, against allReduceSum + addRmsnorm on copies of the same
// inputs: it posts whether the fused op applied and the number of differing bf16 values of out and residual.
// Last, the row-parallel GEMM fused into that all-reduce (gemmAllReduceAddRmsnorm, three calls back to back per
// shape) against msgl_gemm + allReduceSum + addRmsnorm, the same way.
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { CudaBackend } from "../../src/backend/cuda.ts";
import { NcclCommunicator } from "../../src/backend/nccl.ts";
import { joinRankGroup, type RankGroupInit } from "../../src/engine/rank_group.ts";
import { GroupControl } from "../../src/ipc/group_control.ts";
import { randomBf16, readBf16 } from "./device_tensors.ts";

declare const self: Worker;

export interface AllReduceJob {
  device: "cpu" | "cuda"; // cuda: rank r on GPU r
  rank: number;
  group: RankGroupInit;
  counts: number[];
  fusedRows: number[];
  fusedDim: number;
  gemmShapes: [rows: number, k: number][]; // a: [rows, k] (this rank's activations), mat: [fusedDim, k] (its shard)
}

export const inputSeed = (rank: number, index: number) => rank * 1000 + index;

self.onmessage = (e: MessageEvent<AllReduceJob>) => {
  const job = e.data;
  try {
    const backend: Backend = job.device === "cuda" ? new CudaBackend(job.rank) : new CpuBackend();
    const { comm } = joinRankGroup(job.group, job.rank, backend);
    const buffers = job.counts.map((n, i) => randomBf16(backend, n, inputSeed(job.rank, i), 4).ptr);
    job.counts.forEach((n, i) => comm.allReduceSum(buffers[i], n));
    const sums = job.counts.map((n, i) => readBf16(backend, buffers[i], n));
    for (const b of buffers) backend.free(b);
    const fused = job.fusedRows.map((rows, i) => {
      const n = rows * job.fusedDim, seed = 500 + i;
      const make = () => ({
        x: randomBf16(backend, n, inputSeed(job.rank, seed), 2).ptr,
        residual: randomBf16(backend, n, seed, 2).ptr,
        weight: randomBf16(backend, job.fusedDim, seed + 1, 1, 1).ptr,
        out: backend.alloc(n * 2),
      });
      const one = make(), plain = make();
      const applied = comm.allReduceAddRmsnorm?.(one.out, one.residual, one.x, one.weight, rows, job.fusedDim, 1e-6) ?? false;
      if (!applied) {
        comm.allReduceSum(one.x, n);
        backend.ops.addRmsnorm(one.out, one.residual, one.x, one.weight, rows, job.fusedDim, 1e-6);
      }
      comm.allReduceSum(plain.x, n);
      backend.ops.addRmsnorm(plain.out, plain.residual, plain.x, plain.weight, rows, job.fusedDim, 1e-6);
      const differing = (a: Float32Array, b: Float32Array) => a.reduce((k, v, j) => k + (Object.is(v, b[j]) ? 0 : 1), 0);
      const mismatches = differing(readBf16(backend, one.out, n), readBf16(backend, plain.out, n)) +
        differing(readBf16(backend, one.residual, n), readBf16(backend, plain.residual, n));
      for (const t of [one, plain]) for (const p of Object.values(t)) backend.free(p);
      return { applied, mismatches };
    });
    const gemm = job.gemmShapes.map(([rows, k], i) => {
      const n = rows * job.fusedDim, seed = 700 + i, eps = 1e-6;
      const a = randomBf16(backend, rows * k, inputSeed(job.rank, seed), 2).ptr;
      const mat = randomBf16(backend, job.fusedDim * k, inputSeed(job.rank, seed + 50), 0.05).ptr;
      const weight = randomBf16(backend, job.fusedDim, seed + 1, 1, 1).ptr;
      const make = () => ({ residual: randomBf16(backend, n, seed, 2).ptr, out: backend.alloc(n * 2), x: backend.alloc(n * 2) });
      const one = make(), plain = make();
      let applied = true;
      for (let call = 0; call < 3; call++) {
        if (!comm.gemmAllReduceAddRmsnorm?.(one.out, one.residual, a, mat, k, weight, rows, job.fusedDim, eps)) {
          applied = false;
          backend.ops.gemm(one.x, a, mat, 0, rows, job.fusedDim, k, k, false);
          comm.allReduceSum(one.x, n);
          backend.ops.addRmsnorm(one.out, one.residual, one.x, weight, rows, job.fusedDim, eps);
        }
      }
      for (let call = 0; call < 3; call++) {
        backend.ops.gemm(plain.x, a, mat, 0, rows, job.fusedDim, k, k, false);
        comm.allReduceSum(plain.x, n);
        backend.ops.addRmsnorm(plain.out, plain.residual, plain.x, weight, rows, job.fusedDim, eps);
      }
      const differing = (p: number, q: number) => {
        const u = readBf16(backend, p, n), v = readBf16(backend, q, n);
        return u.reduce((count, value, j) => count + (Object.is(value, v[j]) ? 0 : 1), 0);
      };
      const mismatches = differing(one.out, plain.out) + differing(one.residual, plain.residual);
      for (const p of [a, mat, weight, ...Object.values(one), ...Object.values(plain)]) backend.free(p);
      return { applied, mismatches };
    });
    const peer = comm instanceof NcclCommunicator && comm.usesPeerAccess;
    comm.close();
    backend.close();
    postMessage({ type: "sums", sums, peer, fused, gemm });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    GroupControl.attach(job.group.control).fail(job.rank, message);
    postMessage({ type: "error", message });
  }
};
