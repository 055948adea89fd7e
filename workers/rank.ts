// Rank worker: owns one backend and one Engine, fed through the request ring, answering through the
// result ring (one record and one notify per engine step). Shutdown is cooperative: a Shutdown record or
// a closed request ring ends every live request with "abort", frees the device and exits.
// With tensor parallelism (`group`), rank 0 runs the engine and sends each step's plan to ranks 1..N−1,
// which run src/engine/follower.ts. A rank that throws fails the whole group (every rank stops with the
// same error) and reports it to the main thread; rank 0 then closes the result ring.
import type { Backend } from "../src/backend/backend.ts";
import type { Communicator } from "../src/backend/communicator.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { CudaBackend } from "../src/backend/cuda.ts";
import { Engine, type EngineOptions, type StepOutput } from "../src/engine/engine.ts";
import { Follower } from "../src/engine/follower.ts";
import { closePlanRings, joinRankGroup, leadRankGroup, type RankGroupInit } from "../src/engine/rank_group.ts";
import type { FinishReason } from "../src/engine/request.ts";
import { GroupControl } from "../src/ipc/group_control.ts";
import { SharedRing } from "../src/ipc/ring.ts";
import {
  decodeRequest, encodeFlushDone, encodeRequestError, encodeStepResults, Finish, type FinishCode, type TokenResult,
} from "../src/ipc/messages.ts";

declare const self: Worker;

/** This rank's communicator once it joined its group: aborted when the rank fails. */
let communicator: Communicator | null = null;

export interface RankInit {
  rank: number; // in the whole group
  gpu: number; // on cuda: the device index on this machine
  device: "cpu" | "cuda";
  requestRing: SharedArrayBuffer;
  resultRing: SharedArrayBuffer;
  engine: Omit<EngineOptions, "log"> & { quiet?: boolean };
  /** Tensor parallelism: the group's shared memory (null for a single rank). */
  group: RankGroupInit | null;
}

export interface RankReady {
  type: "ready";
  maxSeqLen: number;
  vocabSize: number;
  kvTotalSlots: number;
  maxRunningRequests: number;
  eosTokenIds: number[];
  defaults: EngineOptions["defaults"];
  architecture: string;
  deviceName: string;
  graphMaxBatch: number; // 0: no CUDA graphs
  startupSeconds: number;
}

const FINISH: Record<FinishReason, FinishCode> = { stop: Finish.stop, length: Finish.length, abort: Finish.abort };

function write(ring: SharedRing, record: Int32Array): void {
  // The main thread drains continuously; a full ring only means it is behind. Never drop a record.
  for (let spins = 0; !ring.tryWrite(record); spins++) {
    if (ring.closed) return;
    ring.notify();
    Bun.sleepSync(spins < 100 ? 0 : 1);
  }
}

function wireStats(s: StepOutput["stats"]) {
  return {
    running: s.running, queued: s.queued, kvUsed: s.kvUsedSlots, kvTotal: s.kvTotalSlots,
    cacheHitTokens: s.cachedTokens, promptTokens: s.promptTokens, generatedTokens: s.generatedTokens,
  };
}

function toResults(out: StepOutput): TokenResult[] {
  const results: TokenResult[] = out.tokens.map((t) => ({
    uid: t.uid, token: t.token, finish: t.finish ? FINISH[t.finish] : Finish.none, cachedTokens: t.cachedTokens,
    logprob: t.logprob ?? Number.NaN, topIds: t.topIds ?? [], topLogprobs: t.topLogprobs ?? [],
  }));
  for (const e of out.ended) {
    results.push({ uid: e.uid, token: -1, finish: FINISH[e.reason], cachedTokens: 0, logprob: Number.NaN, topIds: [], topLogprobs: [] });
  }
  return results;
}

function run(init: RankInit): void {
  const started = performance.now();
  const requests = SharedRing.attach(init.requestRing);
  const results = SharedRing.attach(init.resultRing);
  const log = init.engine.quiet ? () => {} : (line: string) => console.log(`[rank ${init.rank}] ${line}`);
  const backend: Backend = init.device === "cuda" ? new CudaBackend(init.gpu) : new CpuBackend();
  const deviceName = backend instanceof CudaBackend ? `cuda:${init.gpu} (${backend.name})` : "cpu";
  const tBackend = performance.now();
  const tp = init.group ? leadRankGroup(init.group, backend) : null;
  communicator = tp?.comm ?? null;
  const engine = Engine.create(backend, { ...init.engine, log }, tp);
  log(`start-up: ${deviceName} ready in ${((tBackend - started) / 1000).toFixed(2)} s, engine (weights, KV, graphs) in ` +
    `${((performance.now() - tBackend) / 1000).toFixed(2)} s`);
  const ready: RankReady = {
    type: "ready", maxSeqLen: engine.maxSeqLen, vocabSize: engine.model.config.vocabSize,
    kvTotalSlots: engine.kv.pool.totalSlots, maxRunningRequests: init.engine.maxRunningRequests ?? 256,
    eosTokenIds: engine.eosTokenIds, defaults: engine.defaults, architecture: engine.model.config.architecture,
    deviceName, graphMaxBatch: engine.graphs?.maxBatch ?? 0,
    startupSeconds: (performance.now() - started) / 1000,
  };
  postMessage(ready);

  let stopping = false;
  while (true) {
    tp?.control.throwIfFailed();
    for (let words = requests.read(); words; words = requests.read()) {
      const m = decodeRequest(words);
      if (m.kind === "newRequest") {
        const error = engine.add(m.uid, m.promptIds, m.params);
        if (error) write(results, encodeRequestError(m.uid, error));
      } else if (m.kind === "abort") engine.abort(m.uid);
      else if (m.kind === "flush") {
        const ok = engine.flushCache();
        write(results, encodeStepResults(wireStats(engine.currentStats()), [])); // fresh KV usage for /metrics
        write(results, encodeFlushDone(m.uid, ok));
      }
      else stopping = true;
    }
    if (stopping || requests.closed) break;
    if (engine.hasWork) {
      const out = engine.step();
      write(results, encodeStepResults(wireStats(out.stats), toResults(out)));
      results.notify();
    } else {
      results.notify();
      requests.waitForData(1000);
    }
  }
  // End whatever is still live with one final "abort" each, then free everything.
  for (const uid of engine.liveUids()) engine.abort(uid);
  while (engine.hasWork) {
    const out = engine.step();
    write(results, encodeStepResults(wireStats(out.stats), toResults(out)));
  }
  engine.close(); // tells the other ranks to stop
  tp?.comm.close();
  backend.close();
  results.notify();
  results.close();
}

/** Ranks 1..N−1 of a tensor-parallel group. */
function follow(init: RankInit, group: RankGroupInit): void {
  const backend: Backend = init.device === "cuda" ? new CudaBackend(init.gpu) : new CpuBackend();
  const member = joinRankGroup(group, init.rank, backend);
  communicator = member.comm;
  const ring = SharedRing.attach(group.planRings[init.rank - 1]);
  const follower = Follower.create(backend, member, ring, init.engine, group.fault);
  postMessage({ type: "ready", rank: init.rank });
  follower.run();
  follower.close();
  backend.close();
}

/** Fails the group (the first failure wins, so every rank reports the same one) and wakes whoever waits. */
function fail(init: RankInit, e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  if (init.rank === 0) SharedRing.attach(init.resultRing).close();
  if (!init.group) return message;
  const control = GroupControl.attach(init.group.control);
  control.fail(init.rank, message);
  if (init.rank === 0) closePlanRings(init.group);
  return control.failure?.message ?? message;
}

self.onmessage = (event: MessageEvent<RankInit>) => {
  const init = event.data;
  postMessage({ type: "started" });
  try {
    if (init.rank === 0) run(init);
    else if (init.group) follow(init, init.group);
    else throw new Error(`rank ${init.rank} without a group`);
  } catch (e) {
    postMessage({ type: "error", rank: init.rank, message: fail(init, e) });
    // After the error is out: NCCL's abort may wait for the other ranks to abort too.
    communicator?.abort();
  }
  postMessage({ type: "exited" });
};
