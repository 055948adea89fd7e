// Hugging Face config.json → validated ModelConfig.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface RopeScaling {
  type: "default" | "llama3" | "linear" | "yarn" | "dynamic";
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
  betaFast?: number;
  betaSlow?: number;
}

export type ModelFamily = "qwen3" | "llama" | "qwen2" | "mistral";

export interface ModelConfig {
  architecture: string;
  family: ModelFamily;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  qkNorm: boolean;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  slidingWindow: number | null;
  torchDtype: string;
  eosTokenIds: number[];
  bosTokenId: number | null;
}

export class ModelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelConfigError";
  }
}

export const SUPPORTED_ARCHITECTURES: Readonly<Record<string, ModelFamily>> = {
  Qwen3ForCausalLM: "qwen3",
  LlamaForCausalLM: "llama",
  Qwen2ForCausalLM: "qwen2",
  MistralForCausalLM: "mistral",
};

type Json = Record<string, unknown>;

function isObject(x: unknown): x is Json {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

export function parseModelConfig(json: unknown, source = "config.json"): ModelConfig {
  const fail = (msg: string) => new ModelConfigError(`${source}: ${msg}`);
  if (!isObject(json)) throw fail("not a JSON object");
  const cfg = json;

  const posInt = (key: string, fallback?: number): number => {
    const v = cfg[key] ?? fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw fail(`"${key}" must be a positive integer (got ${JSON.stringify(v)})`);
    }
    return v;
  };
  const posNum: PosNum = (obj, key, where, fallback) => {
    const v = obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw fail(`"${where}${key}" must be a positive number (got ${JSON.stringify(v)})`);
    }
    return v;
  };
  const tokenId = (key: string): number | null => {
    const v = cfg[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw fail(`"${key}" must be a token id (got ${JSON.stringify(v)})`);
    return v;
  };

  const archs = cfg.architectures;
  if (!Array.isArray(archs) || archs.length === 0) throw fail(`"architectures" must be a non-empty list`);
  const architecture = archs.find((a): a is string => typeof a === "string" && Object.hasOwn(SUPPORTED_ARCHITECTURES, a));
  if (architecture === undefined) {
    throw fail(`unsupported architecture ${JSON.stringify(archs)}; supported: ${Object.keys(SUPPORTED_ARCHITECTURES).join(", ")}`);
  }
  const family = SUPPORTED_ARCHITECTURES[architecture];

  const hiddenSize = posInt("hidden_size");
  const numHeads = posInt("num_attention_heads");
  const numKvHeads = posInt("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw fail(`"num_attention_heads" (${numHeads}) must be divisible by "num_key_value_heads" (${numKvHeads})`);
  }
  if ((cfg.head_dim ?? null) === null && hiddenSize % numHeads !== 0) {
    throw fail(`"hidden_size" (${hiddenSize}) must be divisible by "num_attention_heads" (${numHeads}) when "head_dim" is absent`);
  }
  const headDim = posInt("head_dim", (cfg.head_dim ?? null) === null ? hiddenSize / numHeads : undefined);
  const maxPositionEmbeddings = posInt("max_position_embeddings");

  const attentionBias = cfg.attention_bias ?? false;
  if (typeof attentionBias !== "boolean") throw fail(`"attention_bias" must be a boolean`);
  // Qwen3's attention_bias would also put a bias on o_proj, which nothing here models.
  if (family === "qwen3" && attentionBias) throw fail(`"attention_bias": true is not supported for ${architecture}`);
  const qkvBias = family === "qwen2" ? true : family === "qwen3" ? false : attentionBias;

  let slidingWindow: number | null = null;
  if (family === "mistral") {
    slidingWindow = cfg.sliding_window == null ? null : posInt("sliding_window");
  } else if ((family === "qwen2" || family === "qwen3") && cfg.use_sliding_window === true) {
    // Qwen's per-layer window (max_window_layers) is not modelled; refuse rather than run it wrong.
    throw fail(`"use_sliding_window": true is not supported`);
  }

  const { ropeTheta, ropeScaling } = parseRope(cfg, fail, posNum);

  const tieWordEmbeddings = cfg.tie_word_embeddings ?? false;
  if (typeof tieWordEmbeddings !== "boolean") throw fail(`"tie_word_embeddings" must be a boolean`);

  const dtype = cfg.torch_dtype ?? cfg.dtype ?? "bfloat16";
  if (typeof dtype !== "string") throw fail(`"torch_dtype" must be a string`);

  return {
    architecture,
    family,
    vocabSize: posInt("vocab_size"),
    hiddenSize,
    intermediateSize: posInt("intermediate_size"),
    numLayers: posInt("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: posNum(cfg, "rms_norm_eps", "", 1e-6),
    maxPositionEmbeddings,
    tieWordEmbeddings,
    qkvBias,
    qkNorm: family === "qwen3",
    ropeTheta,
    ropeScaling,
    slidingWindow,
    torchDtype: dtype.replace(/^torch\./, ""),
    eosTokenIds: parseEos(cfg.eos_token_id, fail),
    bosTokenId: tokenId("bos_token_id"),
  };
}

function parseEos(v: unknown, fail: (msg: string) => Error): number[] {
  if (v === undefined || v === null) return [];
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw fail(`"eos_token_id" must be a token id or a list of them (got ${JSON.stringify(v)})`);
    }
  }
  return ids as number[];
}

type PosNum = (obj: Json, key: string, where: string, fallback?: unknown) => number;

/** Classic `rope_theta` + `rope_scaling`, or transformers-5 `rope_parameters` (theta inside). */
function parseRope(cfg: Json, fail: (msg: string) => Error, posNum: PosNum): { ropeTheta: number; ropeScaling: RopeScaling } {
  const v5 = cfg.rope_parameters != null;
  const field = v5 ? "rope_parameters" : "rope_scaling";
  const params = cfg[field] ?? {};
  if (!isObject(params)) throw fail(`"${field}" must be an object or null`);
  const p = `${field}.`;
  const ropeTheta = v5 ? posNum(params, "rope_theta", p, cfg.rope_theta ?? 10000) : posNum(cfg, "rope_theta", "", 10000);

  const type = params.rope_type ?? params.type ?? "default";
  const factor = () => posNum(params, "factor", p);
  const origMax = (fallback?: unknown) => posNum(params, "original_max_position_embeddings", p, fallback);
  switch (type) {
    case "default":
      return { ropeTheta, ropeScaling: { type: "default", factor: 1 } };
    case "linear":
      return { ropeTheta, ropeScaling: { type: "linear", factor: factor() } };
    case "dynamic":
      return { ropeTheta, ropeScaling: { type: "dynamic", factor: factor(), originalMaxPositionEmbeddings: origMax(cfg.max_position_embeddings) } };
    case "llama3": {
      const lowFreqFactor = posNum(params, "low_freq_factor", p);
      const highFreqFactor = posNum(params, "high_freq_factor", p);
      if (highFreqFactor <= lowFreqFactor) throw fail(`"${p}high_freq_factor" must exceed "${p}low_freq_factor"`);
      return {
        ropeTheta,
        ropeScaling: { type: "llama3", factor: factor(), lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: origMax() },
      };
    }
    case "yarn":
      return {
        ropeTheta,
        ropeScaling: {
          type: "yarn",
          factor: factor(),
          originalMaxPositionEmbeddings: origMax(cfg.max_position_embeddings),
          betaFast: posNum(params, "beta_fast", p, 32),
          betaSlow: posNum(params, "beta_slow", p, 1),
        },
      };
    default:
      throw fail(`unsupported "${p}rope_type" ${JSON.stringify(type)}; supported: default, linear, dynamic, llama3, yarn`);
  }
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new ModelConfigError(`${path}: cannot read JSON (${(e as Error).message})`);
  }
}

/**
 * Reads dir/config.json. When generation_config.json is present its eos_token_id ids are appended
 * (deduplicated): generation stops on them, e.g. Qwen3's config lists only 151645 but generation uses 151643 too.
 */
export function loadModelConfig(dir: string): ModelConfig {
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new ModelConfigError(`${path}: not found`);
  const cfg = parseModelConfig(readJson(path), path);
  const genPath = join(dir, "generation_config.json");
  if (existsSync(genPath)) {
    const gen = readJson(genPath);
    if (isObject(gen)) {
      const extra = parseEos(gen.eos_token_id, (msg) => new ModelConfigError(`${genPath}: ${msg}`));
      for (const id of extra) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
    }
  }
  return cfg;
}
