// `bun run serve`: tokenizer and rank worker up (ready handshake), a warm-up request, then the listener;
// SIGINT/SIGTERM stop admitting, end in-flight requests with a final event, free the device, exit 0.
import type { AttentionKernels } from "../backend/attention_kernels.ts";
import { EngineClient } from "../engine/client.ts";
import type { NodeLayout } from "../engine/node_link.ts";
import type { RankInit } from "../../workers/rank.ts";
import { RequestStream } from "../engine/request_stream.ts";
import type { SamplingParams } from "../engine/sampling_params.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { createApp } from "./app.ts";
import type { ServerContext } from "./context.ts";
import { Metrics } from "./metrics.ts";

export interface ServeOptions {
  modelDir: string;
  tp?: number; // tensor-parallel ranks (default 1), on all nodes together
  nodes?: NodeLayout; // multi-node; startServer runs on node 0, the others run runFollowerNode
  servedModelName: string;
  host: string;
  port: number;
  device: "cpu" | "cuda";
  apiKey: string | null;
  maxRunningRequests: number;
  maxQueuedRequests: number;
  maxPrefillLength: number;
  maxSeqLen?: number;
  numPages?: number;
  memoryRatio: number;
  cudaGraphMaxBs?: number;
  attention: AttentionKernels;
  pageSize: number;
  cache: "radix" | "naive";
  dummyWeight: boolean;
  logLevel: "debug" | "info" | "warning" | "error";
}

export interface RunningServer {
  url: string;
  stop(): Promise<void>;
  /** Settles with the reason if the engine fails (a rank threw or hung); the server then refuses requests. */
  failed: Promise<string>;
}

async function warmUp(client: EngineClient, tokenizer: TextTokenizer, defaults: SamplingParams): Promise<void> {
  const stream = new RequestStream(client, tokenizer, 0, [0, 1, 2, 3], { ...defaults, maxTokens: 2, temperature: 0, ignoreEos: true, n: 1 });
  for await (const _ of stream.updates());
}

/** What every rank's engine gets from the serve flags. */
export function rankEngineOptions(o: ServeOptions, eosTokenIds: number[] = []): RankInit["engine"] {
  return {
    modelDir: o.modelDir, dummyWeight: o.dummyWeight, pageSize: o.pageSize, cache: o.cache, maxPrefillLength: o.maxPrefillLength,
    maxRunningRequests: o.maxRunningRequests, maxSeqLen: o.maxSeqLen, numPages: o.numPages, eosTokenIds,
    memoryRatio: o.memoryRatio, cudaGraphMaxBs: o.cudaGraphMaxBs, attention: o.attention,
    quiet: o.logLevel !== "debug" && o.logLevel !== "info",
  };
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const t0 = performance.now();
  const log = (msg: string) => {
    if (o.logLevel === "debug" || o.logLevel === "info") console.log(msg);
  };
  const tokenizer = await TextTokenizer.load(o.modelDir);
  const tTokenizer = performance.now();
  const client = await EngineClient.start(o.device, rankEngineOptions(o, tokenizer.eosTokenIds), { tp: o.tp ?? 1, nodes: o.nodes });
  const info = client.info;
  const tEngine = performance.now();
  await warmUp(client, tokenizer, info.defaults as SamplingParams);
  const tWarm = performance.now();
  let nextUid = 1;
  const metrics = new Metrics();
  client.onStats = (s) => metrics.onStep(s);
  const ctx: ServerContext = {
    client, tokenizer, modelName: o.servedModelName, maxSeqLen: info.maxSeqLen, vocabSize: info.vocabSize,
    defaults: info.defaults as SamplingParams, metrics, apiKey: o.apiKey, maxQueuedRequests: o.maxQueuedRequests,
    state: { ready: false, stopping: false, created: Math.floor(Date.now() / 1000) },
    inflight: { count: 0 },
    allocUids: (n) => {
      const uid = nextUid;
      nextUid += n;
      return uid;
    },
  };
  const failed = new Promise<string>((resolve) => {
    client.onFatal = (message) => {
      console.error(`error: ${message}`);
      ctx.state.stopping = true; // new requests get 503; live ones already ended with the error
      resolve(message);
    };
  });
  const app = createApp(ctx).listen({ hostname: o.host, port: o.port });
  ctx.state.ready = true;
  const url = `http://${o.host}:${app.server!.port}`;
  log(`model ${info.architecture} from ${o.modelDir} as '${o.servedModelName}', dtype bfloat16, device ${info.deviceName}` +
    `${(o.tp ?? 1) > 1 ? ` × ${o.tp} tensor-parallel ranks` : ""}${o.nodes ? ` on ${o.nodes.nnodes} nodes` : ""}`);
  log(`KV cache: ${info.kvTotalSlots} tokens; max concurrency at full context (${info.maxSeqLen} tokens): ` +
    `${Math.floor(info.kvTotalSlots / info.maxSeqLen)}; CUDA graphs: ${info.graphMaxBatch > 0 ? `decode batches up to ${info.graphMaxBatch}` : "none"}`);
  log(`start-up ${((tWarm - t0) / 1000).toFixed(2)} s (tokenizer ${((tTokenizer - t0) / 1000).toFixed(2)} s, ` +
    `engine ${((tEngine - tTokenizer) / 1000).toFixed(2)} s, warm-up ${((tWarm - tEngine) / 1000).toFixed(2)} s); serving on ${url}`);

  let stopped: Promise<void> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      ctx.state.stopping = true;
      await client.close(); // live requests end with "abort"; their streams send a final event
      for (let waited = 0; ctx.inflight.count > 0 && waited < 5000; waited += 10) await Bun.sleep(10);
      await Bun.sleep(20); // let the last SSE bytes leave
      await app.stop(true);
    })();
    return stopped;
  };
  return { url, stop, failed };
}

export function exitOnSignals(server: RunningServer): void {
  const onSignal = (signal: string) => {
    console.log(`${signal}: stopping (in-flight requests end with finish_reason "abort")`);
    server.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", () => onSignal("SIGINT"));
  process.once("SIGTERM", () => onSignal("SIGTERM"));
  server.failed.then(() => server.stop().then(() => process.exit(1)));
}
