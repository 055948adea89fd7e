// Config + weights + activation arena → a ready DecoderModel on one backend.
import type { Backend } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
import { loadModelConfig, type ModelConfig } from "./config.ts";
import { DecoderModel } from "./decoder.ts";
import { shardLayout } from "./shard.ts";
import { loadWeights } from "./weights.ts";
import type { WorkspaceLimits } from "./workspace.ts";

export interface LoadOptions extends Partial<WorkspaceLimits> {
  modelDir: string; // config.json always comes from here, weights too unless dummyWeight
  dummyWeight?: boolean;
  seed?: number; // dummy weights
  maxSeqLen?: number; // defaults to the config's context length
  /** Tensor parallelism: load and run this rank's shard (comm.rank of comm.size). */
  comm?: Communicator;
}

export interface LoadedModel {
  config: ModelConfig;
  model: DecoderModel;
  maxSeqLen: number;
  loadSeconds: number;
}

/** The context length: max_position_embeddings, capped by a sliding window when the model has one. */
export function contextLength(c: ModelConfig): number {
  return c.slidingWindow ? Math.min(c.slidingWindow, c.maxPositionEmbeddings) : c.maxPositionEmbeddings;
}

export function loadModel(backend: Backend, o: LoadOptions): LoadedModel {
  const started = performance.now();
  const config = loadModelConfig(o.modelDir);
  const maxSeqLen = Math.min(o.maxSeqLen ?? contextLength(config), contextLength(config));
  const shard = shardLayout(config, { rank: o.comm?.rank ?? 0, size: o.comm?.size ?? 1 });
  const weights = loadWeights(backend, config, o.dummyWeight ? { dummySeed: o.seed ?? 0 } : { dir: o.modelDir }, shard);
  const maxRequests = o.maxRequests ?? 1;
  const limits: WorkspaceLimits = {
    maxTokens: o.maxTokens ?? 8192,
    maxRequests,
    maxLogitRows: o.maxLogitRows ?? maxRequests,
  };
  const model = new DecoderModel(backend, config, weights, limits, maxSeqLen, o.comm ? { shard, comm: o.comm } : null);
  return { config, model, maxSeqLen, loadSeconds: (performance.now() - started) / 1000 };
}
