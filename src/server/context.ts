// What every route handler shares: the engine client, the tokenizer, limits and metrics.
import type { EngineClient } from "../engine/client.ts";
import type { SamplingParams } from "../engine/sampling_params.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { ApiError } from "./errors.ts";
import type { Metrics } from "./metrics.ts";

export interface ServerContext {
  client: EngineClient;
  tokenizer: TextTokenizer;
  modelName: string;
  maxSeqLen: number;
  vocabSize: number;
  defaults: SamplingParams;
  metrics: Metrics;
  apiKey: string | null;
  maxQueuedRequests: number;
  state: { ready: boolean; stopping: boolean; created: number };
  /** HTTP requests still sending their answer (shutdown waits for them). */
  inflight: { count: number };
  allocUids(n: number): number;
}

export function checkModel(ctx: ServerContext, model: unknown): void {
  if (model === undefined || model === null || model === ctx.modelName) return;
  throw new ApiError(404, `The model '${String(model)}' does not exist (this server serves '${ctx.modelName}')`, "model",
    "model_not_found");
}

export function checkAdmission(ctx: ServerContext): void {
  if (ctx.state.stopping) throw new ApiError(503, "the server is shutting down");
  if (ctx.client.liveRequests >= ctx.maxQueuedRequests) {
    throw new ApiError(503, `too many requests in flight (${ctx.maxQueuedRequests}); retry later`);
  }
}
