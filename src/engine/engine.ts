// The engine of one rank: model + KV + scheduler + sampler, advanced one step at a time by its owner
// (the rank worker's loop, or a test). Every request ends exactly once: finished, aborted or rejected.
import { type AttentionKernels, useAttentionKernels } from "../backend/attention_kernels.ts";
import type { Backend } from "../backend/backend.ts";
import { CudaBackend } from "../backend/cuda.ts";
import { KvStorage } from "../cache/kv_storage.ts";
import { KvPagePool } from "../cache/page_pool.ts";
import { createPrefixCache } from "../cache/prefix_cache.ts";
import { DecodeGraphs, forwardStep } from "../model/decode_graphs.ts";
import type { DecoderModel, ForwardOutput } from "../model/decoder.ts";
import { loadModel } from "../model/load.ts";
import { gatherGpuMemory, gpuMemoryBeforeWorkspace, planKvSlots } from "./memory_plan.ts";
import { KvManager } from "./kv_manager.ts";
import { Request, type FinishReason } from "./request.ts";
import { hasPenalties, Sampler, type SampleResult } from "./sampler.ts";
import { generationDefaults } from "./generation_defaults.ts";
import { resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from "./sampling_params.ts";
import { Scheduler, type ScheduledStep } from "./scheduler.ts";
import { StepLogger } from "./step_logger.ts";
import type { RankLeader } from "./rank_group.ts";
import type { StepPublisher } from "./step_publisher.ts";

export interface EngineOptions {
  modelDir: string;
  dummyWeight?: boolean;
  pageSize?: number; // default 1
  cache?: "radix" | "naive";
  maxPrefillLength?: number; // default 8192
  maxRunningRequests?: number; // default 256
  maxSeqLen?: number; // default: the model's context length
  numPages?: number; // KV pool size; default from kvTokens
  kvTokens?: number; // default: min(65536, maxRunningRequests × maxSeqLen) on the CPU, from memoryRatio on CUDA
  memoryRatio?: number; // CUDA: fraction of the GPU's memory for weights, activations and KV (default 0.9)
  cudaGraphMaxBs?: number; // CUDA: largest decode batch with a graph; 0 disables (default 256 on > 80 GiB, else 160)
  attention?: AttentionKernels; // CUDA: kernel variants (default auto)
  eosTokenIds?: number[]; // default: from config.json / generation_config.json
  defaults?: SamplingParams;
  log?: (line: string) => void;
  /** Overlap scheduling (default: on unless MINISGL_DISABLE_OVERLAP_SCHEDULING=1). */
  overlap?: boolean;
}

export interface TokenEvent {
  uid: number;
  token: number;
  finish: FinishReason | null;
  cachedTokens: number; // prompt tokens served from the prefix cache
  promptTokens: number;
  logprob?: number;
  topIds?: number[];
  topLogprobs?: number[];
}

export interface EndEvent {
  uid: number;
  reason: FinishReason;
}

export interface StepStats {
  running: number;
  queued: number;
  kvUsedSlots: number;
  kvTotalSlots: number;
  promptTokens: number; // computed this step
  cachedTokens: number; // admitted from the cache this step
  generatedTokens: number;
}

export interface StepOutput {
  tokens: TokenEvent[];
  ended: EndEvent[]; // ended without a token this step (aborts)
  stats: StepStats;
}

/** A step whose sampling has been launched; `result` once its tokens have been collected. */
interface InFlightStep {
  step: ScheduledStep;
  wait: (() => SampleResult) | null;
  result: SampleResult | null;
  planStep: number; // tensor parallelism: the step number its plan went out with (-1: none)
}

/** A pending token whose value is still on the device. */
const UNKNOWN_TOKEN = -1;

/** uint32 mixing for per-sample seeds (n > 1) and random default seeds. */
function mixSeed(seed: number, index: number): number {
  let z = (seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

export class Engine {
  readonly scheduler: Scheduler;
  readonly kv: KvManager;
  readonly maxSeqLen: number;
  readonly eosTokenIds: number[];
  readonly defaults: SamplingParams;
  private readonly sampler: Sampler;
  private readonly requests = new Map<number, Request>();
  private readonly logger: StepLogger;
  private pendingEnds: EndEvent[] = [];
  readonly overlap: boolean;
  /** Overlap scheduling: the step whose sampled tokens are not post-processed yet. */
  private inflight: InFlightStep | null = null;
  /** Tensor parallelism: sends each forward's and each sampling's plan to the other ranks. */
  private publisher: StepPublisher | null = null;

  private constructor(
    private readonly backend: Backend,
    readonly model: DecoderModel,
    private readonly storage: KvStorage,
    o: EngineOptions,
    maxSeqLen: number,
    readonly graphs: DecodeGraphs | null,
  ) {
    const pageSize = o.pageSize ?? 1;
    const pool = new KvPagePool(storage.shape.slots / pageSize, pageSize);
    this.kv = new KvManager(pool, createPrefixCache(o.cache ?? "radix", pageSize), storage);
    this.maxSeqLen = maxSeqLen;
    const maxRunning = storage.shape.rows - 1;
    this.scheduler = new Scheduler(this.kv, {
      maxRunningRequests: maxRunning,
      maxPrefillLength: o.maxPrefillLength ?? 8192,
      maxSeqLen,
    });
    this.sampler = new Sampler(backend, maxRunning, model.config.vocabSize, model.ws.tokenPool);
    this.eosTokenIds = o.eosTokenIds ?? model.config.eosTokenIds;
    const log = o.log ?? ((line: string) => console.log(line));
    this.defaults = o.defaults ?? generationDefaults(o.modelDir, model.config.vocabSize, log);
    this.logger = new StepLogger(log);
    this.overlap = o.overlap ?? process.env.MINISGL_DISABLE_OVERLAP_SCHEDULING !== "1";
  }

  /** `tp`: this engine is rank 0 of a tensor-parallel group (src/engine/rank_group.ts). */
  static create(backend: Backend, o: EngineOptions, tp: RankLeader | null = null): Engine {
    const log = o.log ?? ((line: string) => console.log(line));
    const pageSize = o.pageSize ?? 1;
    const maxRunning = o.maxRunningRequests ?? 256;
    const maxPrefill = o.maxPrefillLength ?? 8192;
    for (const [name, v] of [["pageSize", pageSize], ["maxRunningRequests", maxRunning], ["maxPrefillLength", maxPrefill]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be an integer ≥ 1 (got ${v})`);
    }
    useAttentionKernels(backend, o.attention);
    const loaded = loadModel(backend, {
      modelDir: o.modelDir, dummyWeight: o.dummyWeight, maxSeqLen: o.maxSeqLen,
      maxTokens: Math.max(maxPrefill, maxRunning), maxRequests: maxRunning, maxLogitRows: maxRunning, comm: tp?.comm,
    });
    const c = loaded.config;
    const rowLength = Math.ceil(loaded.maxSeqLen / pageSize) * pageSize; // rows hold whole pages
    const shape = {
      layers: c.numLayers, kvHeads: loaded.model.shard.kvHeads, headDim: c.headDim, rows: maxRunning + 1, maxSeqLen: rowLength,
    };
    // Every rank of a tensor-parallel group reports its GPU's memory (the others in Follower.create; zeros
    // on the CPU, where nothing is planned from it).
    const workspaceBytes = loaded.model.deviceBytes;
    const own = gpuMemoryBeforeWorkspace(backend, workspaceBytes);
    const gpus = tp ? gatherGpuMemory(backend, tp.comm, own) : [own];
    let kvTokens = o.numPages ? o.numPages * pageSize : o.kvTokens;
    if (kvTokens === undefined) {
      kvTokens = backend instanceof CudaBackend
        ? planKvSlots(shape, o.memoryRatio ?? 0.9, workspaceBytes, gpus, log)
        : Math.min(65536, maxRunning * loaded.maxSeqLen);
    }
    const slots = Math.max(pageSize, Math.floor(kvTokens / pageSize) * pageSize);
    const storage = new KvStorage(backend, { ...shape, slots }); // + the padding row CUDA graphs use
    const bigGpu = backend instanceof CudaBackend && backend.totalMemory > 80 * 2 ** 30;
    const graphMaxBatch = backend instanceof CudaBackend ? Math.min(o.cudaGraphMaxBs ?? (bigGpu ? 256 : 160), maxRunning) : 0;
    // The other ranks build the same graphs in the same order: capturing runs collectives.
    tp?.publisher.setup({ maxPositions: loaded.maxSeqLen, limits: loaded.model.ws.limits, kv: storage.shape, graphMaxBatch });
    let graphs: DecodeGraphs | null = null;
    if (backend instanceof CudaBackend) {
      if (graphMaxBatch > 0) {
        graphs = new DecodeGraphs(backend, loaded.model, storage, graphMaxBatch);
        log(`CUDA graphs: ${graphs.buckets.length} decode batch sizes up to ${graphs.maxBatch} captured in ${graphs.captureSeconds.toFixed(2)} s`);
      } else log("CUDA graphs: disabled");
    }
    const engine = new Engine(backend, loaded.model, storage, o, loaded.maxSeqLen, graphs);
    if (tp) {
      storage.onPageTableWrite = (row, start, slots) => tp.publisher.pageTableWrite(row, start, slots);
      engine.publisher = tp.publisher;
    }
    return engine;
  }

  /** Validates and queues one prompt (n samples get uids uid … uid+n−1); returns an error message instead
   * of queueing when the request is invalid or can never fit. */
  add(uid: number, prompt: ArrayLike<number>, input?: SamplingParamsInput): string | null {
    let params: SamplingParams;
    try {
      params = resolveSamplingParams(input, this.defaults, this.model.config.vocabSize);
    } catch (e) {
      return (e as Error).message;
    }
    const ids = Int32Array.from(prompt);
    const vocab = this.model.config.vocabSize;
    if (ids.some((t) => !(t >= 0 && t < vocab))) return `prompt token ids must be in [0, ${vocab})`;
    for (let i = 0; i < params.n; i++) {
      if (this.requests.has(uid + i)) return `request uid ${uid + i} is already in use`;
    }
    const seed = params.seed ?? (Math.random() * 2 ** 32) >>> 0;
    for (let i = 0; i < params.n; i++) {
      const r = new Request(uid + i, ids, params, i === 0 ? seed : mixSeed(seed, i), i === 0 ? null : uid, this.kv.pool.pageSize);
      const error = this.scheduler.add(r);
      if (error) {
        if (i > 0) throw new Error("a sample was rejected after its leader was accepted"); // same prompt and limits
        return error;
      }
      this.requests.set(r.uid, r);
    }
    return null;
  }

  abort(uid: number): void {
    const queued = this.scheduler.abort(uid);
    if (queued) this.finishQueued(queued);
  }

  private finishQueued(r: Request): void {
    r.finish = "abort";
    this.requests.delete(r.uid);
    this.pendingEnds.push({ uid: r.uid, reason: "abort" });
  }

  get hasWork(): boolean {
    return this.scheduler.hasWork || this.pendingEnds.length > 0 || this.inflight !== null;
  }

  /** Runs one scheduler step (one forward at most). With overlap scheduling the sampled tokens of a step
   * are post-processed (appended, finish checks, KV freed, reported) only after the next step has been
   * scheduled and launched, so the host work hides behind the device; a request that finished in step k
   * then runs one wasted step k+1 whose token is dropped. Decode inputs come from the device token pool
   * that the sampler writes, so the next step can launch before the host has seen the tokens. */
  step(): StepOutput {
    const ended = this.pendingEnds;
    this.pendingEnds = [];
    for (const r of this.scheduler.collectAborted()) {
      this.requests.delete(r.uid);
      ended.push({ uid: r.uid, reason: "abort" });
    }
    let promptTokens = 0;
    let cachedTokens = 0;
    const planned = this.scheduler.next();
    let current: InFlightStep | null = null;
    if (planned) {
      if (planned.batch.mode === "prefill") {
        promptTokens = planned.batch.inputIds.length;
        for (const r of planned.requests) if (r.computedLength === r.cachedPromptTokens) cachedTokens += r.cachedPromptTokens;
      }
      current = this.run(planned);
      this.scheduler.afterForward(planned);
    }
    let tokens: TokenEvent[] = [];
    if (this.overlap) {
      if (this.inflight) tokens = this.postProcess(this.inflight);
      if (current) this.markPending(current);
      this.inflight = current;
    } else if (current) {
      this.markPending(current);
      tokens = this.postProcess(current);
    }
    const stats = this.stats(promptTokens, cachedTokens, tokens.length);
    if (planned) this.logger.step(planned.batch.mode, planned, stats);
    return { tokens, ended, stats };
  }

  /** The sampled rows now have a pending token (its value is known once the step's result is collected). */
  private markPending(x: InFlightStep): void {
    x.step.sampleRows.forEach((b, i) => {
      const r = x.step.requests[b];
      if (r.finish === null) r.pendingToken = x.result ? x.result.tokens[i] : UNKNOWN_TOKEN;
    });
  }

  /** Waits for a step's sampled tokens and fills in the pending tokens that were still unknown. */
  private collect(x: InFlightStep): SampleResult | null {
    if (!x.result && x.wait) {
      x.result = x.wait();
      this.publisher?.sampled(x.planStep, x.result.tokens);
      x.step.sampleRows.forEach((b, i) => {
        const r = x.step.requests[b];
        if (r.pendingToken === UNKNOWN_TOKEN) r.pendingToken = x.result!.tokens[i];
      });
    }
    return x.result;
  }

  private postProcess(x: InFlightStep): TokenEvent[] {
    const result = this.collect(x);
    const events: TokenEvent[] = [];
    x.step.sampleRows.forEach((b, i) => {
      const r = x.step.requests[b];
      if (r.finish === null) events.push(this.accept(r, result, i));
    });
    return events;
  }

  private forward(step: ScheduledStep): ForwardOutput {
    if (step.batch.mode === "decode") step.batch.idsFromPool = true;
    this.publisher?.forward(step.batch, step.sampleRows); // before this rank's first collective
    return forwardStep(this.model, this.storage, this.graphs, step.batch, step.sampleRows);
  }

  private run(step: ScheduledStep): InFlightStep {
    const out = this.forward(step);
    if (step.sampleRows.length === 0) return { step, wait: null, result: null, planStep: -1 };
    const rows = step.sampleRows.map((b) => step.requests[b]);
    // Penalties count the output tokens, so they need the previous step's token on the host: collect it
    // now (its step has finished or is about to on the device; this step is already queued behind it).
    if (this.inflight && rows.some((r) => hasPenalties(r.params) && r.pendingToken === UNKNOWN_TOKEN)) this.collect(this.inflight);
    const plan = this.sampler.plan(rows.map((r) => {
      const banned = r.generated < r.params.minTokens ? [...this.eosTokenIds, ...r.params.stopTokenIds] : [];
      // Only penalties read the output; skip copying it (with a pending token) for every other row.
      const outputTokens = hasPenalties(r.params) ? r.generatedTokens() : r.output;
      return { params: r.params, poolRow: r.row, seed: r.seed, step: r.generated, promptTokens: r.prompt, outputTokens, banned };
    }));
    const planStep = this.publisher?.sample(plan) ?? -1;
    return { step, wait: this.sampler.run(out.logits, plan), result: null, planStep };
  }

  /** Appends a sampled token, ends the request when it is done, and describes it for the owner. */
  private accept(r: Request, result: SampleResult | null, i: number): TokenEvent {
    if (!result) throw new Error("sampled rows without a sample result");
    const token = result.tokens[i];
    r.output.push(token);
    r.pendingToken = null;
    const p = r.params;
    let finish: FinishReason | null = null;
    if ((!p.ignoreEos && this.eosTokenIds.includes(token)) || p.stopTokenIds.includes(token)) finish = "stop";
    else if (r.output.length >= p.maxTokens) finish = "length";
    const event: TokenEvent = {
      uid: r.uid, token, finish, cachedTokens: r.cachedPromptTokens, promptTokens: r.prompt.length,
    };
    if (result.logprobs && (p.logprobs || p.topLogprobs > 0)) {
      event.logprob = result.logprobs[i];
      if (p.topLogprobs > 0 && result.topIds && result.topLogprobs) {
        const k = result.topK;
        event.topIds = Array.from(result.topIds.subarray(i * k, i * k + p.topLogprobs));
        event.topLogprobs = Array.from(result.topLogprobs.subarray(i * k, i * k + p.topLogprobs));
      }
    }
    if (finish) {
      this.scheduler.end(r, finish);
      this.requests.delete(r.uid);
    }
    return event;
  }

  /** The engine's counters right now (no step taken). */
  currentStats(): StepStats {
    return this.stats(0, 0, 0);
  }

  private stats(promptTokens: number, cachedTokens: number, generatedTokens: number): StepStats {
    const pool = this.kv.pool;
    return {
      running: this.scheduler.running.length,
      queued: this.scheduler.queued,
      kvUsedSlots: pool.usedSlots,
      kvTotalSlots: pool.totalSlots,
      promptTokens,
      cachedTokens,
      generatedTokens,
    };
  }

  /** Drops the prefix cache; refused (false) while any request is queued or running. */
  flushCache(): boolean {
    if (this.scheduler.hasWork) return false;
    return this.kv.flush();
  }

  liveUids(): number[] {
    return [...this.requests.keys()];
  }

  get liveRequests(): number {
    return this.requests.size;
  }

  /** Frees the device memory; rank 0 of a tensor-parallel group first tells the other ranks to stop. */
  close(): void {
    this.publisher?.shutdown();
    this.backend.synchronize();
    this.graphs?.close();
    this.sampler.free();
    this.model.free();
    this.storage.free();
  }
}
