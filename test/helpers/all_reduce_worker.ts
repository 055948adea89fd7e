// One rank of a group in the all-reduce test: uploads its inputs (randomBf16 with seed = its rank · 1000 +
// the buffer's index), all-reduces every buffer back to back without waiting in between, and posts the sums
// and whether the peer-access path was available.
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
    const peer = comm instanceof NcclCommunicator && comm.usesPeerAccess;
    comm.close();
    backend.close();
    postMessage({ type: "sums", sums, peer });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    GroupControl.attach(job.group.control).fail(job.rank, message);
    postMessage({ type: "error", message });
  }
};
