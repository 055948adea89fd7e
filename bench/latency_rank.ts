// One rank of `bun run bench:latency --tp N`: joins the group on its own backend and runs the same
// measurement as every other rank (the collectives of each forward meet), then posts its times.
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { CudaBackend } from "../src/backend/cuda.ts";
import { joinRankGroup, type RankGroupInit } from "../src/engine/rank_group.ts";
import { GroupControl } from "../src/ipc/group_control.ts";
import { type LatencyJob, measureLatency } from "./latency.ts";

declare const self: Worker;

export interface LatencyRankJob {
  job: LatencyJob;
  rank: number;
  group: RankGroupInit;
}

self.onmessage = (e: MessageEvent<LatencyRankJob>) => {
  const { job, rank, group } = e.data;
  try {
    const backend: Backend = job.device === "cuda" ? new CudaBackend(rank) : new CpuBackend();
    const member = joinRankGroup(group, rank, backend);
    const times = measureLatency(backend, job, member.comm);
    member.comm.close();
    backend.close();
    postMessage({ type: "times", times });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    GroupControl.attach(group.control).fail(rank, message);
    postMessage({ type: "error", message: `rank ${rank}: ${message}` });
  }
};
