// `bun run bench:latency`: one model, one prefill of --prefill-batch × --input-len tokens, then decode steps
// at every --batch × --context (KV filled with random values; a step adds one token to a KV of `context`
// tokens), each forward run the engine's way (bench/engine_forward.ts: graph replay where the engine
// replays). Reports ms per prefill and per decode step beside the roofline of the model on the GPU.
// With --tp N every rank runs the same measurement in its own Worker (bench/latency_rank.ts) on its shard,
// so the collectives meet; rank 0's times are reported.
import { ATTENTION_FLAG_HELP, type AttentionKernels, parseAttentionKernels, useAttentionKernels } from "../src/backend/attention_kernels.ts";
import type { Backend } from "../src/backend/backend.ts";
import type { Communicator } from "../src/backend/communicator.ts";
import { KvStorage } from "../src/cache/kv_storage.ts";
import { createRankGroup } from "../src/engine/rank_group.ts";
import { loadModelConfig, type ModelConfig } from "../src/model/config.ts";
import type { ForwardBatch } from "../src/model/forward_batch.ts";
import { loadModel } from "../src/model/load.ts";
import { shardLayout } from "../src/model/shard.ts";
import { openBackend } from "./device_backend.ts";
import { EngineForward } from "./engine_forward.ts";
import * as flag from "./flags.ts";
import type { LatencyRankJob } from "./latency_rank.ts";
import { defaultDevice, gpuName, hardwareLabel } from "./hardware.ts";
import { benchModelDir } from "./model_dir.ts";
import { forwardCost, modelCost, type ModelCost } from "./model_cost.ts";
import { MAX_PROMPT_TOKEN_ID } from "./offline_workload.ts";
import { PyRandom } from "./py_random.ts";
import { appendRecord, recordHead } from "./record.ts";
import { forwardFloorSeconds, gpuSpec, type GpuSpec } from "./roofline.ts";
import { median } from "./stats.ts";
import * as units from "./units.ts";

const FLAGS: flag.FlagDef[] = [
  flag.MODEL_FLAG,
  flag.DEVICE_FLAG,
  flag.DUMMY_WEIGHT_FLAG,
  { name: "batch", value: "b1,b2,...", help: "Decode batch sizes", default: "1,64" },
  { name: "context", value: "l1,l2,...", help: "KV length of each decode request (the new token included)", default: "1024" },
  { name: "prefill-batch", value: "n", help: "Requests in the prefill", default: "1" },
  { name: "input-len", value: "n", help: "Prompt tokens per prefill request", default: "1024" },
  { name: "steps", value: "n", help: "Timed decode steps per configuration (median reported)", default: "20" },
  { name: "warmup-steps", value: "n", help: "Untimed steps before timing", default: "3" },
  { name: "cuda-graph-max-bs", value: "n", help: "Largest decode batch replayed from a CUDA graph; 0 disables (cuda)", default: "256" },
  { name: "seed", value: "n", help: "Seed of the input ids and dummy weights", default: "0" },
  { name: "tp", value: "n", help: "Tensor-parallel ranks (one Worker and GPU each)", default: "1" },
  { name: "attn", value: "auto|prefill,decode", help: ATTENTION_FLAG_HELP, default: "auto" },
  ...flag.outputFlags("table"),
];

/** Median wall time of `run` in ms over `steps` runs after `warmup`, the device synchronized around each. */
function timeMs(backend: Backend, run: () => void, steps: number, warmup: number): number {
  for (let i = 0; i < warmup; i++) run();
  backend.synchronize();
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    run();
    backend.synchronize();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** `batch` requests of `newTokens` each over KV rows 0..batch−1, request r at slots [r·kvLen, (r+1)·kvLen). */
function forwardBatch(random: PyRandom, batch: number, newTokens: number, kvLen: number): ForwardBatch {
  const t = batch * newTokens;
  const b: ForwardBatch = {
    mode: newTokens === 1 ? "decode" : "prefill",
    inputIds: Int32Array.from({ length: t }, () => random.randint(0, MAX_PROMPT_TOKEN_ID)),
    positions: new Int32Array(t),
    outSlots: new Int32Array(t),
    qoIndptr: Int32Array.from({ length: batch + 1 }, (_, r) => r * newTokens),
    kvLens: new Int32Array(batch).fill(kvLen),
    rows: Int32Array.from({ length: batch }, (_, r) => r),
  };
  for (let r = 0; r < batch; r++) {
    for (let i = 0; i < newTokens; i++) {
      const position = kvLen - newTokens + i;
      b.positions[r * newTokens + i] = position;
      b.outSlots[r * newTokens + i] = r * kvLen + position;
    }
  }
  return b;
}

function writeRows(kv: KvStorage, batch: number, kvLen: number): void {
  for (let r = 0; r < batch; r++) kv.writePageTable(r, 0, Int32Array.from({ length: kvLen }, (_, j) => r * kvLen + j));
}

interface Floor {
  flops: number;
  bytes: number;
  roofline_ms: number | null;
}

/** The work of one forward (whole model) and its floor on `tp` GPUs that split it evenly. */
function floor(cost: ModelCost, gpu: GpuSpec | null, batch: number, newTokens: number, kvLen: number, tp: number): Floor {
  const { flops, bytes } = forwardCost(cost, batch, newTokens, kvLen);
  return { flops, bytes, roofline_ms: gpu ? (1000 * forwardFloorSeconds(cost, gpu, batch, newTokens, kvLen)) / tp : null };
}

function kvFor(backend: Backend, c: ModelConfig, kvHeads: number, slots: number, rows: number, maxSeqLen: number, seed: number): KvStorage {
  const kv = new KvStorage(backend, { layers: c.numLayers, kvHeads, headDim: c.headDim, slots, rows, maxSeqLen });
  const elements = slots * kvHeads * c.headDim;
  for (let l = 0; l < c.numLayers; l++) {
    backend.ops.fillRandom(kv.k[l], elements, seed + 2 * l, 0, 1);
    backend.ops.fillRandom(kv.v[l], elements, seed + 2 * l + 1, 0, 1);
  }
  return kv;
}

/** What one rank measures: every rank of a group runs it with the same options. */
export interface LatencyJob {
  device: "cpu" | "cuda";
  modelDir: string;
  dummyWeight: boolean;
  batches: number[];
  contexts: number[];
  prefillBatch: number;
  inputLen: number;
  steps: number;
  warmup: number;
  seed: number;
  cudaGraphMaxBs: number;
  attention: AttentionKernels;
}

export interface DecodeTiming {
  batch: number;
  context: number;
  step_ms: number;
  graph_replay: boolean;
}

export interface LatencyTimes {
  architecture: string;
  loadSeconds: number;
  prefillMs: number;
  decode: DecodeTiming[];
}

/** Loads the model (this rank's shard with `comm`), fills a KV cache with random values and times the
 * prefill and every decode configuration. */
export function measureLatency(backend: Backend, job: LatencyJob, comm?: Communicator): LatencyTimes {
  const { batches, contexts, prefillBatch, inputLen, steps, warmup, seed } = job;
  useAttentionKernels(backend, job.attention);
  const maxBatch = Math.max(prefillBatch, ...batches);
  const maxSeqLen = Math.max(inputLen, ...contexts);
  const { model, config, loadSeconds, maxSeqLen: modelMax } = loadModel(backend, {
    modelDir: job.modelDir, dummyWeight: job.dummyWeight, seed, maxSeqLen, maxTokens: Math.max(prefillBatch * inputLen, maxBatch),
    maxRequests: maxBatch, maxLogitRows: maxBatch, comm,
  });
  if (maxSeqLen > modelMax) throw new flag.BenchFlagError(`--context / --input-len ${maxSeqLen} exceed the model's context ${modelMax}`);
  const slots = Math.max(prefillBatch * inputLen, ...batches.flatMap((b) => contexts.map((l) => b * l)));
  const kv = kvFor(backend, config, model.shard.kvHeads, slots, maxBatch + 1, maxSeqLen, seed);
  const forward = new EngineForward(backend, model, kv, job.cudaGraphMaxBs);
  const random = new PyRandom(seed);
  try {
    writeRows(kv, prefillBatch, inputLen);
    const prefill = forwardBatch(random, prefillBatch, inputLen, inputLen);
    const prefillMs = timeMs(backend, () => forward.run(prefill), Math.max(1, Math.ceil(steps / 4)), Math.min(1, warmup));
    const decode: DecodeTiming[] = [];
    for (const batch of batches) {
      for (const context of contexts) {
        writeRows(kv, batch, context);
        const b = forwardBatch(random, batch, 1, context);
        decode.push({ batch, context, step_ms: timeMs(backend, () => forward.run(b), steps, warmup), graph_replay: forward.replays(batch) });
      }
    }
    return { architecture: config.architecture, loadSeconds, prefillMs, decode };
  } finally {
    forward.close();
    kv.free();
    model.free();
  }
}

/** Runs the job on `tp` rank Workers and returns rank 0's times. */
async function measureParallel(job: LatencyJob, tp: number): Promise<LatencyTimes> {
  const group = createRankGroup(tp, { fault: null });
  const workers = Array.from({ length: tp }, () => new Worker(new URL("./latency_rank.ts", import.meta.url).href));
  try {
    const results = await Promise.all(workers.map((w, rank) => new Promise<LatencyTimes>((resolve, reject) => {
      w.onmessage = (e) => (e.data.type === "times" ? resolve(e.data.times) : reject(new Error(e.data.message)));
      w.onerror = (e) => reject(new Error(`rank ${rank} crashed: ${e.message}`));
      const rankJob: LatencyRankJob = { job, rank, group };
      w.postMessage(rankJob);
    })));
    return results[0];
  } finally {
    for (const w of workers) w.terminate();
  }
}

function attentionFlag(text: string, device: "cpu" | "cuda"): AttentionKernels {
  let k: AttentionKernels;
  try {
    k = parseAttentionKernels(text);
  } catch (e) {
    throw new flag.BenchFlagError((e as Error).message);
  }
  if (device === "cpu" && text !== "auto") throw new flag.BenchFlagError(`--attn ${text}: the CPU backend has one attention kernel of each kind (only auto)`);
  return k;
}

async function main(): Promise<void> {
  const f = flag.parseFlags(process.argv.slice(2), "bun run bench:latency", "prefill and decode-step latency beside the roofline", FLAGS);
  const device = flag.str(f, "device") === undefined ? defaultDevice() : flag.choice(f, "device", ["cpu", "cuda"] as const);
  const dummyWeight = flag.bool(f, "dummy-weight");
  const job: LatencyJob = {
    device, dummyWeight, modelDir: await benchModelDir(flag.requiredStr(f, "model"), dummyWeight),
    batches: flag.intList(f, "batch", 1), contexts: flag.intList(f, "context", 1), prefillBatch: flag.int(f, "prefill-batch", 1),
    inputLen: flag.int(f, "input-len", 2), steps: flag.int(f, "steps", 1), warmup: flag.int(f, "warmup-steps", 0),
    seed: flag.int(f, "seed", 0), cudaGraphMaxBs: flag.int(f, "cuda-graph-max-bs", 0), attention: attentionFlag(flag.str(f, "attn") ?? "auto", device),
  };
  const tp = flag.int(f, "tp", 1);
  const json = flag.bool(f, "json");
  const say = (line: string) => (json ? console.error(line) : console.log(line));
  const hardware = hardwareLabel(device);
  const gpu = device === "cuda" ? gpuSpec(gpuName()) : null;
  const config = loadModelConfig(job.modelDir);
  if (tp > 1) shardLayout(config, { rank: 0, size: tp }); // a clear error before any Worker

  let times: LatencyTimes;
  if (tp === 1) {
    const backend = openBackend(device);
    try {
      times = measureLatency(backend, job);
    } finally {
      backend.close();
    }
  } else times = await measureParallel(job, tp);

  const { prefillBatch, inputLen, steps, warmup } = job;
  const cost = modelCost(config);
  const prefillFloor = floor(cost, gpu, prefillBatch, inputLen, inputLen, tp);
  const decode = times.decode.map((d) => ({
    ...d, tokens_per_s: (1000 * d.batch) / d.step_ms, weight_bytes: cost.weightBytesPerStep, kv_bytes: d.batch * d.context * cost.kvBytesPerToken,
    ...floor(cost, gpu, d.batch, 1, d.context, tp),
  }));
  const prefillMs = times.prefillMs;
  const pct = (roofMs: number | null, ms: number) => (roofMs === null ? "n/a" : `${((100 * roofMs) / ms).toFixed(0)}%`);
  const roofLabel = (roofMs: number | null) => (roofMs === null ? `n/a (${device === "cpu" ? "cpu" : `no spec for ${hardware}`})` : `${roofMs.toFixed(3)} ms`);
  say(`bench:latency — ${times.architecture} from ${job.modelDir}${dummyWeight ? " (dummy weights)" : ""}, loaded in ${times.loadSeconds.toFixed(2)} s; ` +
    `device ${device} on ${hardware}${tp > 1 ? ` × ${tp} tensor-parallel ranks` : ""}; forward only (embedding → LM-head logits; ` +
    `sampling is in bench:kernels); median of ${steps} decode steps after ${warmup} warm-up`);
  say(`prefill ${prefillBatch} × ${inputLen} tokens: ${prefillMs.toFixed(3)} ms (${((1000 * prefillBatch * inputLen) / prefillMs).toFixed(0)} tok/s); ` +
    `${units.flops(prefillFloor.flops)}, ${units.bytes(prefillFloor.bytes)} moved; roofline ${roofLabel(prefillFloor.roofline_ms)}; at ${pct(prefillFloor.roofline_ms, prefillMs)} of it`);
  say(`${"batch".padStart(6)} ${"context".padStart(8)} ${"ms/step".padStart(10)} ${"tok/s".padStart(10)} ${"graph".padStart(6)} ` +
    `${"weights".padStart(10)} ${"KV read".padStart(10)} ${"roofline".padStart(16)} ${"% of it".padStart(8)}`);
  for (const d of decode) {
    say(`${String(d.batch).padStart(6)} ${String(d.context).padStart(8)} ${d.step_ms.toFixed(3).padStart(10)} ${d.tokens_per_s.toFixed(0).padStart(10)} ` +
      `${(d.graph_replay ? "yes" : "no").padStart(6)} ${units.bytes(d.weight_bytes).padStart(10)} ${units.bytes(d.kv_bytes).padStart(10)} ` +
      `${roofLabel(d.roofline_ms).padStart(16)} ${pct(d.roofline_ms, d.step_ms).padStart(8)}`);
  }
  const row = {
    ...recordHead("latency", device, hardware, "bench:latency"),
    model: flag.requiredStr(f, "model"),
    architecture: times.architecture,
    dummy_weight: dummyWeight,
    tp,
    gpu_spec: gpu,
    prefill: { batch: prefillBatch, input_len: inputLen, ms: prefillMs, tokens_per_s: (1000 * prefillBatch * inputLen) / prefillMs, ...prefillFloor },
    decode,
    steps,
    warmup_steps: warmup,
  };
  if (json) console.log(JSON.stringify(row));
  const record = flag.str(f, "record");
  if (record) appendRecord(record, row);
}

if (import.meta.main) flag.runMain(main);
