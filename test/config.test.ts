import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureFixtures } from "../scripts/make_fixtures.ts";
import { loadModelConfig, ModelConfigError, parseModelConfig, type ModelConfig } from "../src/model/config.ts";

const CONFIGS = join(import.meta.dir, "configs");
const raw = (name: string): Record<string, unknown> => JSON.parse(readFileSync(join(CONFIGS, name, "config.json"), "utf8"));

function expectError(fn: () => unknown, ...parts: string[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ModelConfigError);
  for (const p of parts) expect((err as Error).message).toContain(p);
}

describe("real configs", () => {
  const table: [string, Partial<ModelConfig>][] = [
    ["Qwen3-0.6B", { numLayers: 28, hiddenSize: 1024, numHeads: 16, numKvHeads: 8, headDim: 128, intermediateSize: 3072, vocabSize: 151936, tieWordEmbeddings: true }],
    ["Qwen3-4B", { numLayers: 36, hiddenSize: 2560, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 9728, vocabSize: 151936, tieWordEmbeddings: true }],
    ["Qwen3-8B", { numLayers: 36, hiddenSize: 4096, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 12288, vocabSize: 151936, tieWordEmbeddings: false }],
    ["Qwen3-14B", { numLayers: 40, hiddenSize: 5120, numHeads: 40, numKvHeads: 8, headDim: 128, intermediateSize: 17408, vocabSize: 151936, tieWordEmbeddings: false }],
    ["Qwen3-32B", { numLayers: 64, hiddenSize: 5120, numHeads: 64, numKvHeads: 8, headDim: 128, intermediateSize: 25600, vocabSize: 151936, tieWordEmbeddings: false }],
    ["Llama-3.1-8B", { numLayers: 32, hiddenSize: 4096, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 14336, vocabSize: 128256, tieWordEmbeddings: false }],
    ["Qwen2.5-7B", { numLayers: 28, hiddenSize: 3584, numHeads: 28, numKvHeads: 4, headDim: 128, intermediateSize: 18944, vocabSize: 152064, tieWordEmbeddings: false }],
  ];
  for (const [name, want] of table) {
    test(name, () => expect(loadModelConfig(join(CONFIGS, name))).toMatchObject(want));
  }

  test("Qwen3-8B in full", () => {
    expect(loadModelConfig(join(CONFIGS, "Qwen3-8B"))).toEqual({
      architecture: "Qwen3ForCausalLM",
      family: "qwen3",
      vocabSize: 151936,
      hiddenSize: 4096,
      intermediateSize: 12288,
      numLayers: 36,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      rmsNormEps: 1e-6,
      maxPositionEmbeddings: 40960,
      tieWordEmbeddings: false,
      qkvBias: false,
      qkNorm: true,
      ropeTheta: 1000000,
      ropeScaling: { type: "default", factor: 1 },
      slidingWindow: null,
      torchDtype: "bfloat16",
      eosTokenIds: [151645, 151643], // 151643 comes from generation_config.json
      bosTokenId: 151643,
    });
    expect(parseModelConfig(raw("Qwen3-8B")).eosTokenIds).toEqual([151645]);
  });

  test("Llama-3.1-8B: llama3 RoPE scaling, head_dim derived, eos from generation_config", () => {
    const c = loadModelConfig(join(CONFIGS, "Llama-3.1-8B"));
    expect(c.family).toBe("llama");
    expect(c.ropeTheta).toBe(500000);
    expect(c.ropeScaling).toEqual({ type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect(c.qkvBias).toBe(false);
    expect(c.qkNorm).toBe(false);
    expect(c.rmsNormEps).toBe(1e-5);
    expect(c.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(c.bosTokenId).toBe(128000);
    expect(c.maxPositionEmbeddings).toBe(131072);
  });

  test("Qwen2.5-7B: qkv bias, sliding window off", () => {
    const c = loadModelConfig(join(CONFIGS, "Qwen2.5-7B"));
    expect(c.family).toBe("qwen2");
    expect(c.qkvBias).toBe(true);
    expect(c.qkNorm).toBe(false);
    expect(c.slidingWindow).toBeNull();
    expect(c.eosTokenIds).toEqual([151643]);
  });
});

describe("config formats", () => {
  test("transformers-5 rope_parameters equals its classic twin (llama3)", () => {
    const classic = raw("Llama-3.1-8B");
    const { rope_theta, rope_scaling, torch_dtype, ...rest } = classic;
    const v5 = { ...rest, dtype: torch_dtype, rope_parameters: { ...(rope_scaling as object), rope_theta } };
    expect(parseModelConfig(v5)).toEqual(parseModelConfig(classic));
  });

  test("transformers-5 rope_parameters equals its classic twin (default)", () => {
    const classic = raw("Qwen3-0.6B");
    const { rope_theta, rope_scaling: _, ...rest } = classic;
    const v5 = { ...rest, rope_parameters: { rope_type: "default", rope_theta } };
    expect(parseModelConfig(v5)).toEqual(parseModelConfig(classic));
  });

  test("defaults: head_dim null or absent, num_key_value_heads absent, eos as a number", () => {
    const base: Record<string, unknown> = { ...raw("Llama-3.1-8B"), head_dim: null };
    delete base.num_key_value_heads;
    const c = parseModelConfig(base);
    expect(c.headDim).toBe(128);
    expect(c.numKvHeads).toBe(32);
    expect(c.eosTokenIds).toEqual([128001]);
    const q = raw("Qwen3-0.6B");
    delete q.head_dim;
    expect(parseModelConfig(q).headDim).toBe(64); // hidden 1024 / 16 heads
  });

  test("older rope_scaling with `type`, yarn defaults, unknown rope type", () => {
    const base = raw("Qwen3-0.6B");
    expect(parseModelConfig({ ...base, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling).toEqual({ type: "linear", factor: 2 });
    expect(parseModelConfig({ ...base, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32768 } }).ropeScaling)
      .toEqual({ type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32768, betaFast: 32, betaSlow: 1 });
    expectError(() => parseModelConfig({ ...base, rope_scaling: { rope_type: "longrope", factor: 4 } }), "rope_scaling.rope_type", "longrope");
  });

  test("Mistral: sliding window and attention_bias", () => {
    const mistral = {
      architectures: ["MistralForCausalLM"], hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32,
      num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 32768, rms_norm_eps: 1e-5, rope_theta: 10000.0,
      sliding_window: 4096, tie_word_embeddings: false, torch_dtype: "bfloat16", bos_token_id: 1, eos_token_id: 2,
    };
    const c = parseModelConfig(mistral);
    expect(c).toMatchObject({ family: "mistral", slidingWindow: 4096, qkvBias: false, qkNorm: false, headDim: 128, eosTokenIds: [2], bosTokenId: 1 });
    expect(parseModelConfig({ ...mistral, sliding_window: null, attention_bias: true })).toMatchObject({ slidingWindow: null, qkvBias: true });
  });

  test("torch dtype prefix and missing optional fields", () => {
    const base = raw("Qwen3-0.6B");
    delete base.bos_token_id;
    delete base.eos_token_id;
    delete base.rope_theta;
    const c = parseModelConfig({ ...base, torch_dtype: "torch.float16" });
    expect(c.torchDtype).toBe("float16");
    expect(c.bosTokenId).toBeNull();
    expect(c.eosTokenIds).toEqual([]);
    expect(c.ropeTheta).toBe(10000);
  });
});

describe("bad configs", () => {
  const base = () => raw("Qwen3-8B");

  test("missing or non-positive required fields name the field and the file", () => {
    const c = base();
    delete c.hidden_size;
    expectError(() => parseModelConfig(c, "some/dir/config.json"), "some/dir/config.json", "\"hidden_size\"");
    for (const field of ["vocab_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"]) {
      expectError(() => parseModelConfig({ ...base(), [field]: 0 }), "config.json", `"${field}"`);
      expectError(() => parseModelConfig({ ...base(), [field]: 2.5 }), `"${field}"`);
      expectError(() => parseModelConfig({ ...base(), [field]: "64" }), `"${field}"`);
    }
    expectError(() => parseModelConfig({ ...base(), head_dim: -1 }), "\"head_dim\"");
    expectError(() => parseModelConfig({ ...base(), rms_norm_eps: 0 }), "\"rms_norm_eps\"");
    expectError(() => parseModelConfig({ ...base(), eos_token_id: [1, "x"] }), "\"eos_token_id\"");
    expectError(() => parseModelConfig([1, 2]), "not a JSON object");
  });

  test("unknown architecture lists the supported ones", () => {
    expectError(() => parseModelConfig({ ...base(), architectures: ["GPT2LMHeadModel"] }), "GPT2LMHeadModel", "Qwen3ForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM");
    const c = base();
    delete c.architectures;
    expectError(() => parseModelConfig(c), "\"architectures\"");
  });

  test("heads not divisible by kv heads; hidden not divisible by heads without head_dim", () => {
    expectError(() => parseModelConfig({ ...base(), num_key_value_heads: 5 }), "\"num_attention_heads\"", "\"num_key_value_heads\"");
    const c = { ...raw("Llama-3.1-8B"), num_attention_heads: 24, num_key_value_heads: 8 };
    expectError(() => parseModelConfig(c), "\"hidden_size\"", "\"head_dim\"");
  });

  test("incomplete llama3 scaling names the missing key", () => {
    const c = raw("Llama-3.1-8B");
    const { low_freq_factor: _, ...scaling } = c.rope_scaling as Record<string, unknown>;
    expectError(() => parseModelConfig({ ...c, rope_scaling: scaling }), "\"rope_scaling.low_freq_factor\"");
    const { rope_theta, rope_scaling, ...rest } = c;
    expectError(() => parseModelConfig({ ...rest, rope_parameters: { ...(rope_scaling as object), rope_theta, factor: 0 } }), "\"rope_parameters.factor\"");
  });

  test("unsupported variants are refused, not silently run", () => {
    expectError(() => parseModelConfig({ ...raw("Qwen2.5-7B"), use_sliding_window: true }), "use_sliding_window");
    expectError(() => parseModelConfig({ ...base(), attention_bias: true }), "attention_bias");
  });

  test("missing config.json names the path", () => {
    expectError(() => loadModelConfig(join(CONFIGS, "nope")), join(CONFIGS, "nope", "config.json"));
  });
});

describe("fixture configs", () => {
  let root = "";
  beforeAll(async () => {
    root = await ensureFixtures();
  });

  test("tiny models parse with the intended shapes", () => {
    const q3 = loadModelConfig(join(root, "tiny-qwen3"));
    expect(q3).toMatchObject({ family: "qwen3", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32, intermediateSize: 128,
      tieWordEmbeddings: true, qkNorm: true, ropeTheta: 1e6, vocabSize: 151936, eosTokenIds: [151645, 151643], bosTokenId: 151643 });
    const ll = loadModelConfig(join(root, "tiny-llama"));
    expect(ll).toMatchObject({ family: "llama", numKvHeads: 1, headDim: 16, intermediateSize: 160, tieWordEmbeddings: false, maxPositionEmbeddings: 2048,
      ropeTheta: 500000, ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } });
    const q2 = loadModelConfig(join(root, "tiny-qwen2"));
    expect(q2).toMatchObject({ family: "qwen2", qkvBias: true, headDim: 16, tieWordEmbeddings: false, slidingWindow: null });
    for (const v of ["tiny-qwen3-sharded", "tiny-qwen3-f32", "tiny-qwen3-f16"]) expect(loadModelConfig(join(root, v))).toEqual(q3);
  });
});
