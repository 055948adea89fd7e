// One rank of a group in the all-reduce test: uploads its inputs (randomBf16 with seed = its rank · 1000 +
// the buffer's index), all-reduces every buffer back to back without waiting in between, and posts the sums
// and whether the peer-access path was available. Then, for each row count, the fused all-reduce + residual
// add + RMSNorm where the communicator has one, against allReduceSum + addRmsnorm on copies of the same
// inputs: it posts whether the fused op applied and the number of differing bf16 values of out and residual.
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
    const peer = comm instanceof NcclCommunicator && comm.usesPeerAccess;
    comm.close();
    backend.close();
    postMessage({ type: "sums", sums, peer, fused });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    GroupControl.attach(job.group.control).fail(job.rank, message);
    postMessage({ type: "error", message });
  }
};
