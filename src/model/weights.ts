// Model weights on the device: read from safetensors (any of bf16/fp16/fp32 → bf16), q/k/v and gate/up
// merged while loading, tied embeddings shared; or random (`dummyWeight`) from the config alone.
// Each tensor-parallel rank loads only its shard (src/model/shard.ts): its rows of the column-parallel
// weights (q/k/v heads, gate/up, embedding and LM head vocabulary), its columns of the row-parallel ones
// (o_proj, down_proj); norms are replicated. Dummy weights of a shard are the same values as the
// corresponding part of the unsharded dummy weights.
import type { Backend, DevicePtr } from "../backend/backend.ts";
import type { ModelConfig } from "./config.ts";
import { fillRandomAt } from "./random_fill.ts";
import { Checkpoint, type TensorToWrite } from "./safetensors.ts";
import { SINGLE_RANK, shardLayout, type ShardLayout } from "./shard.ts";
import { sliceBf16, type Span } from "./tensor_slice.ts";

export interface LayerWeights {
  inputNorm: DevicePtr;
  qkv: DevicePtr; // [(qHeads + 2 kvHeads) · headDim, hidden] (local heads)
  qkvBias: DevicePtr; // 0 when the architecture has none
  qNorm: DevicePtr; // 0 unless Qwen3
  kNorm: DevicePtr;
  o: DevicePtr; // [hidden, qHeads · headDim]
  postNorm: DevicePtr;
  gateUp: DevicePtr; // [2 · intermediate, hidden] (local intermediate)
  down: DevicePtr; // [hidden, intermediate]
}

export interface ModelWeights {
  embed: DevicePtr; // [vocabLocal, hidden]
  layers: LayerWeights[];
  finalNorm: DevicePtr;
  lmHead: DevicePtr; // [vocabLocal, hidden]; == embed when tied
  bytes: number;
}

/** One source tensor [R, C] (vectors: [R, 1]) and the block of it this rank holds. */
interface Part {
  name: string;
  shape: number[];
  rows: Span;
  cols: Span;
}

/** One device tensor made of blocks of one or more source tensors (concatenated along dim 0). */
interface WeightPlan {
  parts: Part[];
  kind: "norm" | "matrix" | "bias";
}

const all = (n: number): Span => ({ start: 0, count: n });
const span = (start: number, count: number): Span => ({ start, count });

function layerPlans(c: ModelConfig, i: number, s: ShardLayout): Record<keyof LayerWeights, WeightPlan | null> {
  const p = `model.layers.${i}.`;
  const [h, d, q, kv, inter] = [c.hiddenSize, c.headDim, c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.intermediateSize];
  const qRows = span(s.qHeadStart * d, s.qHeads * d);
  const kvRows = span(s.kvHeadStart * d, s.kvHeads * d);
  const interRows = span(s.interStart, s.interLocal);
  // [name, full shape, rows held, columns held]
  const plan = (kind: WeightPlan["kind"], parts: [string, number[], Span, Span?][]): WeightPlan => ({
    kind,
    parts: parts.map(([name, shape, rows, cols]) => ({ name: p + name, shape, rows, cols: cols ?? all(shape[1] ?? 1) })),
  });
  return {
    inputNorm: plan("norm", [["input_layernorm.weight", [h], all(h)]]),
    qkv: plan("matrix", [["self_attn.q_proj.weight", [q, h], qRows], ["self_attn.k_proj.weight", [kv, h], kvRows],
      ["self_attn.v_proj.weight", [kv, h], kvRows]]),
    qkvBias: c.qkvBias
      ? plan("bias", [["self_attn.q_proj.bias", [q], qRows], ["self_attn.k_proj.bias", [kv], kvRows], ["self_attn.v_proj.bias", [kv], kvRows]])
      : null,
    qNorm: c.qkNorm ? plan("norm", [["self_attn.q_norm.weight", [d], all(d)]]) : null,
    kNorm: c.qkNorm ? plan("norm", [["self_attn.k_norm.weight", [d], all(d)]]) : null,
    o: plan("matrix", [["self_attn.o_proj.weight", [h, q], all(h), qRows]]),
    postNorm: plan("norm", [["post_attention_layernorm.weight", [h], all(h)]]),
    gateUp: plan("matrix", [["mlp.gate_proj.weight", [inter, h], interRows], ["mlp.up_proj.weight", [inter, h], interRows]]),
    down: plan("matrix", [["mlp.down_proj.weight", [h, inter], all(h), interRows]]),
  };
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const localCount = (part: Part) => part.rows.count * part.cols.count;

/** Where weight values come from: a checkpoint on disk, or a seeded random generator. */
type Source = (plan: WeightPlan, dst: DevicePtr, index: number) => void;

function checkpointSource(backend: Backend, checkpoint: Checkpoint): Source {
  return (plan, dst) => {
    let offset = 0;
    for (const part of plan.parts) {
      const t = checkpoint.get(part.name);
      if (t.shape.length !== part.shape.length || t.shape.some((n, j) => n !== part.shape[j])) {
        throw new Error(`${t.file}: tensor ${part.name} has shape [${t.shape}] but the config implies [${part.shape}]`);
      }
      const bf16 = sliceBf16(t, part.rows, part.cols);
      backend.upload(dst + offset, bf16);
      offset += bf16.byteLength;
    }
  };
}

// Dummy weights: norms exactly 1, matrices and biases small and zero-mean, as a freshly initialized model.
// The unsharded tensor is one fill over its concatenated parts; a shard fills its blocks at their offsets.
function randomSource(backend: Backend, seed: number): Source {
  return (plan, dst, index) => {
    const [mean, std] = plan.kind === "norm" ? [1, 0] : [0, 0.02];
    const fill = (at: DevicePtr, n: number, offset: number) => fillRandomAt(backend.ops, at, n, seed + index, offset, mean, std);
    let base = 0; // element offset of the part in the unsharded tensor
    let out = dst;
    for (const part of plan.parts) {
      const C = part.shape[1] ?? 1;
      const { rows, cols } = part;
      if (cols.count === C) fill(out, rows.count * C, base + rows.start * C);
      else for (let r = 0; r < rows.count; r++) fill(out + r * cols.count * 2, cols.count, base + (rows.start + r) * C + cols.start);
      out += localCount(part) * 2;
      base += count(part.shape);
    }
  };
}

export function loadWeights(backend: Backend, config: ModelConfig, from: { dir: string } | { dummySeed: number },
  shard: ShardLayout = shardLayout(config, SINGLE_RANK)): ModelWeights {
  const source = "dir" in from ? checkpointSource(backend, Checkpoint.open(from.dir)) : randomSource(backend, from.dummySeed);
  let bytes = 0;
  let index = 0;
  const place = (plan: WeightPlan): DevicePtr => {
    const size = plan.parts.reduce((a, part) => a + localCount(part), 0) * 2;
    const dst = backend.alloc(size);
    source(plan, dst, index++);
    bytes += size;
    return dst;
  };
  const global = (kind: WeightPlan["kind"], name: string, shape: number[], rows: Span) =>
    place({ kind, parts: [{ name, shape, rows, cols: all(shape[1] ?? 1) }] });

  const { vocabSize: v, hiddenSize: h } = config;
  const vocabRows = span(shard.vocabStart, shard.vocabLocal);
  const embed = global("matrix", "model.embed_tokens.weight", [v, h], vocabRows);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const plans = layerPlans(config, i, shard);
    const layer = {} as LayerWeights;
    for (const key of Object.keys(plans) as (keyof LayerWeights)[]) {
      const plan = plans[key];
      layer[key] = plan ? place(plan) : 0;
    }
    layers.push(layer);
  }
  const finalNorm = global("norm", "model.norm.weight", [h], all(h));
  const lmHead = config.tieWordEmbeddings ? embed : global("matrix", "lm_head.weight", [v, h], vocabRows);
  return { embed, layers, finalNorm, lmHead, bytes };
}

export function freeWeights(backend: Backend, w: ModelWeights): void {
  const pointers = [w.embed, w.finalNorm, ...w.layers.flatMap((l) => Object.values(l))];
  if (w.lmHead !== w.embed) pointers.push(w.lmHead);
  for (const p of pointers) if (p) backend.free(p);
}

/** The device weights of an unsharded model as HF-named bf16 tensors (merged ones split again), e.g. to
 * hand dummy weights to another implementation. */
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
  const whole = (name: string, shape: number[]): Part => ({ name, shape, rows: all(shape[0]), cols: all(shape[1] ?? 1) });
  const { vocabSize: v, hiddenSize: h } = config;
  const unsharded = shardLayout(config, SINGLE_RANK);
  take({ kind: "matrix", parts: [whole("model.embed_tokens.weight", [v, h])] }, w.embed);
  w.layers.forEach((layer, i) => {
    const plans = layerPlans(config, i, unsharded);
    for (const key of Object.keys(plans) as (keyof LayerWeights)[]) {
      const plan = plans[key];
      if (plan) take(plan, layer[key]);
    }
  });
  take({ kind: "norm", parts: [whole("model.norm.weight", [h])] }, w.finalNorm);
  if (!config.tieWordEmbeddings) take({ kind: "matrix", parts: [whole("lm_head.weight", [v, h])] }, w.lmHead);
  return out;
}
