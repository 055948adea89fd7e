// Main-thread side of the rank workers: spawns them one at a time with a ready handshake, writes requests
// into rank 0's request ring, and drains its result ring (Atomics.waitAsync), dispatching each result to
// its request's handler. With tensor parallelism there is one Worker per rank; only rank 0 talks to the
// main thread. If any rank fails, every live request ends with that error (EngineFailed) and the client
// refuses new ones.
import { cuda } from "../backend/cudart.ts";
import { SharedRing } from "../ipc/ring.ts";
import {
  decodeResult, encodeAbort, encodeFlush, encodeNewRequest, encodeShutdown, type StepStats, type TokenResult,
} from "../ipc/messages.ts";
import { loadModelConfig } from "../model/config.ts";
import { shardLayout } from "../model/shard.ts";
import type { RankInit, RankReady } from "../../workers/rank.ts";
import { type NodeLayout, NodeLinkServer, nodeRanks } from "./node_link.ts";
import { createRankGroup, type RankGroupInit, type RankGroupOptions } from "./rank_group.ts";
import { GroupControl } from "../ipc/group_control.ts";
import { ProgressWatch } from "./progress_watch.ts";
import { RankWorker } from "./rank_worker.ts";
import type { SamplingParams } from "./sampling_params.ts";

export interface RequestHandlers {
  onResult(r: TokenResult): void; // tokens and the final entry (finish ≠ none)
  onError(message: string): void; // rejected by the engine; no other reply follows
  onFailure(message: string): void; // the engine failed; no other reply follows
}

export interface StartOptions {
  tp?: number; // tensor-parallel ranks (default 1), on all nodes together
  group?: RankGroupOptions;
  nodes?: NodeLayout; // multi-node: this is node 0 (the other nodes run src/engine/follower_node.ts)
}

/** The engine stopped (a rank threw, or a collective timed out): nothing more will run. */
export class EngineFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EngineFailed";
  }
}

const RING_WORDS = 1 << 22; // 16 MiB per ring
const EXIT_GRACE_MS = 10_000; // after a failure, how long close() waits for ranks before terminating them

function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export class EngineClient {
  private readonly handlers = new Map<number, RequestHandlers>();
  private readonly flushes = new Map<number, (ok: boolean) => void>();
  private nextFlush = 1;
  private draining: Promise<void>;
  private failure: string | null = null;
  onStats: ((s: StepStats) => void) | null = null;
  /** Called once if the engine fails after start-up. */
  onFatal: ((message: string) => void) | null = null;

  private constructor(
    private readonly ranks: RankWorker[],
    private readonly requests: SharedRing,
    private readonly results: SharedRing,
    readonly info: RankReady,
    private readonly link: NodeLinkServer | null,
    watchdog: { group: RankGroupInit; ranks: number[] } | null,
  ) {
    this.draining = this.drain();
    for (const r of ranks) r.onError = (message) => this.fail(message);
    if (watchdog) this.watchProgress(watchdog.group, watchdog.ranks);
  }

  /** On GPUs a rank stuck inside a CUDA or NCCL call cannot report itself (src/engine/progress_watch.ts). */
  private watchProgress(group: RankGroupInit, ranks: number[]): void {
    const control = GroupControl.attach(group.control);
    const watch = new ProgressWatch(control, ranks, group.timeoutMs, performance.now());
    const timer = setInterval(() => {
      if (this.failure || this.requests.closed) return clearInterval(timer);
      const stall = watch.check(performance.now(), this.handlers.size > 0);
      if (!stall) return;
      clearInterval(timer);
      control.fail(stall.rank, stall.reason);
      this.fail(control.failure!.message);
    }, Math.min(500, group.timeoutMs / 4));
  }

  static async start(device: RankInit["device"], engine: RankInit["engine"], o: StartOptions = {}): Promise<EngineClient> {
    const tp = o.tp ?? 1;
    if (!Number.isInteger(tp) || tp < 1) throw new Error(`tp must be an integer ≥ 1 (got ${tp})`);
    const nnodes = o.nodes?.nnodes ?? 1;
    const local = nodeRanks(tp, nnodes, 0);
    if (nnodes > 1 && device !== "cuda") throw new Error("multi-node tensor parallelism needs --device cuda (its collectives go over NCCL)");
    if (o.nodes && o.nodes.nodeRank !== 0) throw new Error("EngineClient runs on node 0 only");
    if (tp > 1) shardLayout(loadModelConfig(engine.modelDir), { rank: 0, size: tp }); // a clear error before any Worker
    const gpus = device === "cuda" && local.length > 1 ? cuda.deviceCount() : local.length;
    if (gpus < local.length) throw new Error(`--tp ${tp} needs ${local.length} GPUs on this node, but ${gpus} ${gpus === 1 ? "is" : "are"} visible`);
    const requests = SharedRing.create(RING_WORDS);
    const results = SharedRing.create(RING_WORDS);
    const group = tp > 1 ? createRankGroup(tp, { ...o.group, spansNodes: nnodes > 1 }) : null;
    const link = group && o.nodes && nnodes > 1 ? NodeLinkServer.start(group, o.nodes, tp) : null;
    const ranks: RankWorker[] = [];
    for (const [gpu, rank] of local.entries()) {
      ranks.push(await RankWorker.spawn({ rank, gpu, device, requestRing: requests.buffer, resultRing: results.buffer, engine, group }));
    }
    try {
      const ready = await Promise.all(ranks.map((r) => r.ready));
      const watchdog = group && device === "cuda" ? { group, ranks: local } : null;
      return new EngineClient(ranks, requests, results, ready[0] as RankReady, link, watchdog);
    } catch (e) {
      // The failing rank failed the group, so the others stop too; rank 0 also stops on a closed ring.
      requests.close();
      await within(Promise.all(ranks.map((r) => r.exited)), EXIT_GRACE_MS);
      for (const r of ranks) r.terminate();
      await link?.close();
      throw e;
    }
  }

  /** Queues a request; false when the request ring is full (the caller answers 503 / retries). */
  submit(uid: number, prompt: ArrayLike<number>, params: SamplingParams, handlers: RequestHandlers): boolean {
    if (this.failure) throw new EngineFailed(this.failure);
    if (!this.requests.tryWrite(encodeNewRequest(uid, Int32Array.from(prompt), params))) return false;
    for (let i = 0; i < params.n; i++) this.handlers.set(uid + i, handlers);
    this.requests.notify();
    return true;
  }

  abort(uid: number): void {
    if (!this.handlers.has(uid) || this.failure) return;
    while (!this.requests.tryWrite(encodeAbort(uid))) Bun.sleepSync(1);
    this.requests.notify();
  }

  flush(): Promise<boolean> {
    if (this.failure) return Promise.resolve(false);
    const uid = this.nextFlush++;
    return new Promise((resolve) => {
      this.flushes.set(uid, resolve);
      while (!this.requests.tryWrite(encodeFlush(uid))) Bun.sleepSync(1);
      this.requests.notify();
    });
  }

  get liveRequests(): number {
    return this.handlers.size;
  }

  /** Why the engine stopped, or null while it runs. */
  get failed(): string | null {
    return this.failure;
  }

  private async drain(): Promise<void> {
    while (true) {
      for (let words = this.results.read(); words; words = this.results.read()) this.dispatch(words);
      if ((await this.results.waitForDataAsync(1000)) === "closed") break;
    }
    for (let words = this.results.read(); words; words = this.results.read()) this.dispatch(words);
  }

  private dispatch(words: Int32Array): void {
    const m = decodeResult(words);
    if (m.kind === "stepResults") {
      this.onStats?.(m.stats);
      for (const r of m.results) {
        const h = this.handlers.get(r.uid);
        if (!h) continue;
        if (r.finish !== 0) this.handlers.delete(r.uid);
        h.onResult(r);
      }
    } else if (m.kind === "requestError") {
      const h = this.handlers.get(m.uid);
      if (!h) return;
      for (const [uid, other] of this.handlers) if (other === h) this.handlers.delete(uid); // its n samples
      h.onError(m.message);
    } else {
      this.flushes.get(m.uid)?.(m.ok);
      this.flushes.delete(m.uid);
    }
  }

  /** A rank failed: what rank 0 already answered still counts; every other live request gets the error. */
  private fail(message: string): void {
    if (this.failure) return;
    this.failure = `the engine stopped: ${message}`;
    for (let words = this.results.read(); words; words = this.results.read()) this.dispatch(words);
    const ended = new Set(this.handlers.values());
    this.handlers.clear();
    for (const h of ended) h.onFailure(this.failure);
    for (const resolve of this.flushes.values()) resolve(false);
    this.flushes.clear();
    if (!this.requests.closed) {
      this.requests.close(); // rank 0, if still running, stops
      this.requests.notify();
    }
    this.onFatal?.(this.failure);
  }

  /** Cooperative shutdown: live requests end with "abort", the workers free their memory and exit. */
  async close(): Promise<void> {
    if (!this.requests.closed) {
      while (!this.requests.tryWrite(encodeShutdown())) Bun.sleepSync(1);
      this.requests.notify();
    }
    const exited = Promise.all([this.draining, ...this.ranks.map((r) => r.exited)]);
    if (this.failure) await within(exited, EXIT_GRACE_MS);
    else await exited;
    this.requests.close();
    for (const r of this.ranks) r.terminate();
    await this.link?.close();
  }
}
