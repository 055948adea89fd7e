// Model weights on the device: read from safetensors (any of bf16/fp16/fp32 → bf16), q/k/v and gate/up
// merged while loading, tied embeddings shared; or random (`dummyWeight`) from the config alone.
import type { Backend, DevicePtr } from "../backend/backend.ts";
import type { ModelConfig } from "./config.ts";
import { Checkpoint, toBf16, type TensorToWrite, type TensorView } from "./safetensors.ts";

export interface LayerWeights {
  inputNorm: DevicePtr;
  qkv: DevicePtr; // [(qHeads + 2 kvHeads) · headDim, hidden]
  qkvBias: DevicePtr; // 0 when the architecture has none
  qNorm: DevicePtr; // 0 unless Qwen3
  kNorm: DevicePtr;
  o: DevicePtr; // [hidden, qHeads · headDim]
  postNorm: DevicePtr;
  gateUp: DevicePtr; // [2 · intermediate, hidden]
  down: DevicePtr; // [hidden, intermediate]
}

export interface ModelWeights {
  embed: DevicePtr; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: DevicePtr;
  lmHead: DevicePtr; // == embed when tied
  bytes: number;
}

/** One device tensor made of row blocks from one or more source tensors (concatenated along dim 0). */
interface WeightPlan {
  parts: { name: string; shape: number[] }[];
  kind: "norm" | "matrix" | "bias";
}

function layerPlans(c: ModelConfig, i: number): Record<keyof LayerWeights, WeightPlan | null> {
  const p = `model.layers.${i}.`;
  const [h, d, q, kv, inter] = [c.hiddenSize, c.headDim, c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.intermediateSize];
  const matrix = (parts: [string, number, number][]): WeightPlan => ({
    kind: "matrix",
    parts: parts.map(([name, rows, cols]) => ({ name: p + name, shape: [rows, cols] })),
  });
  const vector = (kind: "norm" | "bias", parts: [string, number][]): WeightPlan => ({
    kind,
    parts: parts.map(([name, n]) => ({ name: p + name, shape: [n] })),
  });
  return {
    inputNorm: vector("norm", [["input_layernorm.weight", h]]),
    qkv: matrix([["self_attn.q_proj.weight", q, h], ["self_attn.k_proj.weight", kv, h], ["self_attn.v_proj.weight", kv, h]]),
    qkvBias: c.qkvBias
      ? vector("bias", [["self_attn.q_proj.bias", q], ["self_attn.k_proj.bias", kv], ["self_attn.v_proj.bias", kv]])
      : null,
    qNorm: c.qkNorm ? vector("norm", [["self_attn.q_norm.weight", d]]) : null,
    kNorm: c.qkNorm ? vector("norm", [["self_attn.k_norm.weight", d]]) : null,
    o: matrix([["self_attn.o_proj.weight", h, q]]),
    postNorm: vector("norm", [["post_attention_layernorm.weight", h]]),
    gateUp: matrix([["mlp.gate_proj.weight", inter, h], ["mlp.up_proj.weight", inter, h]]),
    down: matrix([["mlp.down_proj.weight", h, inter]]),
  };
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Where weight values come from: a checkpoint on disk, or a seeded random generator. */
type Source = (plan: WeightPlan, dst: DevicePtr, index: number) => void;

function checkpointSource(backend: Backend, checkpoint: Checkpoint): Source {
  return (plan, dst) => {
    let offset = 0;
    for (const part of plan.parts) {
      const t: TensorView = checkpoint.get(part.name);
      if (t.shape.length !== part.shape.length || t.shape.some((n, j) => n !== part.shape[j])) {
        throw new Error(`${t.file}: tensor ${part.name} has shape [${t.shape}] but the config implies [${part.shape}]`);
      }
      const bf16 = toBf16(t);
      backend.upload(dst + offset, bf16);
      offset += bf16.byteLength;
    }
  };
}

// Dummy weights: norms exactly 1, matrices and biases small and zero-mean, as a freshly initialized model.
function randomSource(backend: Backend, seed: number): Source {
  return (plan, dst, index) => {
    const n = plan.parts.reduce((a, part) => a + count(part.shape), 0);
    if (plan.kind === "norm") backend.ops.fillRandom(dst, n, seed + index, 1, 0);
    else backend.ops.fillRandom(dst, n, seed + index, 0, 0.02);
  };
}

export function loadWeights(backend: Backend, config: ModelConfig, from: { dir: string } | { dummySeed: number }): ModelWeights {
  const source = "dir" in from ? checkpointSource(backend, Checkpoint.open(from.dir)) : randomSource(backend, from.dummySeed);
  let bytes = 0;
  let index = 0;
  const place = (plan: WeightPlan): DevicePtr => {
    const size = plan.parts.reduce((a, part) => a + count(part.shape), 0) * 2;
    const dst = backend.alloc(size);
    source(plan, dst, index++);
    bytes += size;
    return dst;
  };
  const global = (kind: WeightPlan["kind"], name: string, shape: number[]) => place({ kind, parts: [{ name, shape }] });

  const { vocabSize: v, hiddenSize: h } = config;
  const embed = global("matrix", "model.embed_tokens.weight", [v, h]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const plans = layerPlans(config, i);
    const layer = {} as LayerWeights;
    for (const key of Object.keys(plans) as (keyof LayerWeights)[]) {
      const plan = plans[key];
      layer[key] = plan ? place(plan) : 0;
    }
    layers.push(layer);
  }
  const finalNorm = global("norm", "model.norm.weight", [h]);
  const lmHead = config.tieWordEmbeddings ? embed : global("matrix", "lm_head.weight", [v, h]);
  return { embed, layers, finalNorm, lmHead, bytes };
}

export function freeWeights(backend: Backend, w: ModelWeights): void {
  const all = [w.embed, w.finalNorm, ...w.layers.flatMap((l) => Object.values(l))];
  if (w.lmHead !== w.embed) all.push(w.lmHead);
  for (const p of all) if (p) backend.free(p);
}

/** The device weights as HF-named bf16 tensors (merged ones split again), e.g. to hand dummy weights to
 * another implementation. */
export function checkpointTensors(backend: Backend, config: ModelConfig, w: ModelWeights): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  const take = (plan: WeightPlan, src: DevicePtr) => {
    let offset = 0;
    for (const part of plan.parts) {
      const data = new Uint8Array(count(part.shape) * 2);
      backend.download(data, src + offset);
      offset += data.byteLength;
      out.push({ name: part.name, dtype: "BF16", shape: part.shape, data });
    }
  };
  const { vocabSize: v, hiddenSize: h } = config;
  take({ kind: "matrix", parts: [{ name: "model.embed_tokens.weight", shape: [v, h] }] }, w.embed);
  w.layers.forEach((layer, i) => {
    const plans = layerPlans(config, i);
    for (const key of Object.keys(plans) as (keyof LayerWeights)[]) {
      const plan = plans[key];
      if (plan) take(plan, layer[key]);
    }
  });
  take({ kind: "norm", parts: [{ name: "model.norm.weight", shape: [h] }] }, w.finalNorm);
  if (!config.tieWordEmbeddings) take({ kind: "matrix", parts: [{ name: "lm_head.weight", shape: [v, h] }] }, w.lmHead);
  return out;
}
