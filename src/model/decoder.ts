// A decoder-only transformer (Qwen3, Llama, Qwen2, Mistral) as a sequence of native ops.
// The architectures differ only in what the config switches on: q/k RMSNorm (Qwen3), qkv bias (Qwen2),
// RoPE scaling (Llama 3). Buffers come from the workspace; nothing is allocated per forward.
// Tensor parallelism (`tp`): the layers run on the rank's heads and intermediate slice (its weights are a
// shard), o_proj and down_proj outputs are summed over ranks, the embedding and LM head are vocab-parallel.
import type { Backend, DevicePtr } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
import type { KvStorage } from "../cache/kv_storage.ts";
import type { ModelConfig } from "./config.ts";
import { type ForwardBatch, validateBatch } from "./forward_batch.ts";
import { ropeCosSinCache } from "./rope.ts";
import { localConfig, SINGLE_RANK, shardLayout, type ShardLayout } from "./shard.ts";
import { VocabParallelHead } from "./vocab_parallel_head.ts";
import type { LayerWeights, ModelWeights } from "./weights.ts";
import { Workspace, type WorkspaceLimits } from "./workspace.ts";

/** What compute() needs to know about a prepared batch. */
export interface ComputeShape {
  mode: "prefill" | "decode";
  tokens: number;
  requests: number;
  logitRows: number;
  gather: boolean; // logits of gathered rows (ws.logitIndices) rather than of every token
  fromPool: boolean; // input ids from ws.tokenPool by row
}

export interface ForwardOutput {
  logits: DevicePtr; // fp32 [rows, vocab]
  rows: number;
}

/** The rank's shard and its group's collectives. */
export interface TensorParallelModel {
  shard: ShardLayout;
  comm: Communicator;
}

export class DecoderModel {
  readonly ws: Workspace;
  /** This rank's slice of the model (the whole model without tensor parallelism). */
  readonly shard: ShardLayout;
  /** The config as this rank's layers see it: local head counts and intermediate size. */
  readonly local: ModelConfig;
  private readonly comm: Communicator | null;
  private readonly head: VocabParallelHead | null;
  private readonly cosSin: DevicePtr;
  /** Device bytes this object allocated (workspace, LM-head buffers, RoPE table): the same on every rank. */
  readonly deviceBytes: number;
  private readonly qDim: number;
  private readonly kvDim: number;
  private readonly qkvDim: number;

  constructor(
    private readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    limits: WorkspaceLimits,
    readonly maxPositions: number,
    tp: TensorParallelModel | null = null,
  ) {
    this.shard = tp?.shard ?? shardLayout(config, SINGLE_RANK);
    this.local = localConfig(config, this.shard);
    this.comm = tp && tp.shard.size > 1 ? tp.comm : null;
    this.ws = new Workspace(backend, this.local, limits, maxPositions);
    this.head = this.comm ? new VocabParallelHead(backend, this.shard, this.comm, config.vocabSize, config.hiddenSize, limits.maxLogitRows) : null;
    const table = ropeCosSinCache(config, maxPositions);
    this.cosSin = backend.alloc(table.byteLength);
    backend.upload(this.cosSin, table);
    this.deviceBytes = this.ws.bytes + (this.head?.bytes ?? 0) + table.byteLength;
    this.qDim = this.local.numHeads * config.headDim;
    this.kvDim = this.local.numKvHeads * config.headDim;
    this.qkvDim = this.qDim + 2 * this.kvDim;
  }

  /** Runs the batch; logits for the last token of each request ("last"), of the listed requests only,
   * or for every token ("all"). */
  forward(batch: ForwardBatch, kv: KvStorage, logitsFor: "last" | "all" | readonly number[] = "last"): ForwardOutput {
    const shape = this.prepare(batch, kv, logitsFor);
    return this.compute(shape, kv);
  }

  /** Checks the batch and uploads its inputs into the workspace; nothing runs yet. */
  prepare(batch: ForwardBatch, kv: KvStorage, logitsFor: "last" | "all" | readonly number[] = "last"): ComputeShape {
    validateBatch(batch);
    const { ws, backend } = this;
    if (kv.shape.maxSeqLen > ws.maxPageStride) throw new Error(`KV page stride ${kv.shape.maxSeqLen} > ${ws.maxPageStride}`);
    const tokens = batch.inputIds.length;
    const requests = batch.kvLens.length;
    const selected = logitsFor === "all" || logitsFor === "last" ? null : logitsFor;
    const logitRows = logitsFor === "all" ? tokens : selected ? selected.length : requests;
    if (tokens > ws.limits.maxTokens || requests > ws.limits.maxRequests || logitRows > ws.limits.maxLogitRows) {
      throw new Error(`forward batch (${tokens} tokens, ${requests} requests) exceeds the workspace limits`);
    }
    for (const p of batch.positions) if (p >= this.maxPositions) throw new Error(`position ${p} ≥ max positions ${this.maxPositions}`);
    const fromPool = batch.idsFromPool === true;
    if (fromPool && batch.mode !== "decode") throw new Error("forward batch: only decode reads its ids from the token pool");
    if (!fromPool) backend.upload(ws.ids, batch.inputIds);
    backend.upload(ws.positions, batch.positions);
    backend.upload(ws.outSlots, batch.outSlots);
    backend.upload(ws.qoIndptr, batch.qoIndptr);
    backend.upload(ws.kvLens, batch.kvLens);
    backend.upload(ws.rows, batch.rows);
    // Every decode token is its request's last, so decode logits need no gather.
    const gather = logitsFor !== "all" && !(batch.mode === "decode" && selected === null);
    if (gather) {
      const last = new Int32Array(logitRows);
      for (let i = 0; i < logitRows; i++) last[i] = batch.qoIndptr[(selected ? selected[i] : i) + 1] - 1;
      backend.upload(ws.logitIndices, last);
    }
    return { mode: batch.mode, tokens, requests, logitRows, gather, fromPool };
  }

  /** Runs the kernels of one forward on inputs already in the workspace. Uploads nothing and depends only
   * on the shape, so a decode forward can be captured in a CUDA graph and replayed with new inputs. */
  compute(s: ComputeShape, kv: KvStorage): ForwardOutput {
    const { ws, backend, config: c } = this;
    const ops = backend.ops;
    if (s.fromPool) ops.gatherTokens(ws.ids, ws.tokenPool, ws.rows, s.tokens);
    ops.embedding(ws.residual, this.weights.embed, ws.ids, s.tokens, c.hiddenSize, this.shard.vocabStart, this.shard.vocabLocal);
    this.comm?.allReduceSum(ws.residual, s.tokens * c.hiddenSize);
    const layers = this.weights.layers;
    for (let l = 0; l < c.numLayers; l++) {
      this.layer(l, layers[l], l + 1 < c.numLayers ? layers[l + 1].inputNorm : this.weights.finalNorm, s, kv);
    }
    if (s.logitRows === 0) return { logits: ws.logits, rows: 0 };
    let hidden = ws.normed;
    if (s.gather) {
      ops.gatherRows(ws.gathered, ws.normed, ws.logitIndices, s.logitRows, c.hiddenSize);
      hidden = ws.gathered;
    }
    if (this.head) this.head.logits(ws.logits, hidden, this.weights.lmHead, s.logitRows);
    else ops.gemm(ws.logits, hidden, this.weights.lmHead, 0, s.logitRows, c.vocabSize, c.hiddenSize, c.hiddenSize, true);
    return { logits: ws.logits, rows: s.logitRows };
  }

  /** Layer l, ending with the next norm (`nextNorm`: the next layer's input norm, or the final norm) applied to
   * its output: the residual stream gets the layer's sum, ws.normed the next input. */
  private layer(l: number, w: LayerWeights, nextNorm: DevicePtr, s: ComputeShape, kv: KvStorage): void {
    const { ws, backend, local: c } = this; // local head counts and intermediate size
    const tokens = s.tokens;
    const ops = backend.ops;
    const h = c.hiddenSize;
    if (l === 0) ops.rmsnorm(ws.normed, ws.residual, w.inputNorm, tokens, h, c.rmsNormEps);

    // Attention: merged QKV projection, then q/k work in place on its q and k sections.
    ops.gemm(ws.qkv, ws.normed, w.qkv, w.qkvBias, tokens, this.qkvDim, h, h, false);
    const q = ws.qkv;
    ops.qkNormRopeStore(ws.qkv, w.qNorm ?? 0, w.kNorm ?? 0, ws.positions, this.cosSin, kv.k[l], kv.v[l], ws.outSlots, tokens,
      c.numHeads, c.numKvHeads, c.headDim, c.headDim, c.rmsNormEps);
    const scale = 1 / Math.sqrt(c.headDim);
    const stride = kv.shape.maxSeqLen;
    if (s.mode === "decode") {
      ops.attentionDecode(ws.attn, q, kv.k[l], kv.v[l], kv.pageTable, stride, ws.rows, ws.kvLens, tokens, c.numHeads,
        c.numKvHeads, c.headDim, this.qkvDim, scale, ws.decodeScratch, ws.decodeScratchBytes);
    } else {
      ops.attentionPrefill(ws.attn, q, kv.k[l], kv.v[l], kv.pageTable, stride, ws.rows, ws.qoIndptr, ws.kvLens,
        s.requests, tokens, c.numHeads, c.numKvHeads, c.headDim, this.qkvDim, scale);
    }
    this.projectAddNorm(ws.attn, w.o, this.qDim, w.postNorm, tokens);

    // MLP
    if (tokens <= ops.gemmSiluMulMaxRows && h % 8 === 0) ops.gemmSiluMul(ws.act, ws.normed, w.gateUp, tokens, c.intermediateSize, h, h);
    else {
      ops.gemm(ws.gateUp, ws.normed, w.gateUp, 0, tokens, 2 * c.intermediateSize, h, h, false);
      ops.siluMul(ws.act, ws.gateUp, tokens, c.intermediateSize);
    }
    this.projectAddNorm(ws.act, w.down, c.intermediateSize, nextNorm, tokens);
  }

  /** The row-parallel projection a · mat^T (o_proj, down_proj), then addNorm: fused into one all-reduce where the
   * communicator can. */
  private projectAddNorm(a: DevicePtr, mat: DevicePtr, k: number, weight: DevicePtr, tokens: number): void {
    const { ws, comm, config: c } = this;
    const h = c.hiddenSize;
    if (comm?.gemmAllReduceAddRmsnorm?.(ws.normed, ws.residual, a, mat, k, weight, tokens, h, c.rmsNormEps)) return;
    this.backend.ops.gemm(ws.out, a, mat, 0, tokens, h, k, k, false);
    this.addNorm(weight, tokens);
  }

  /** residual += ws.out (summed over the tensor-parallel ranks, whose outputs are partial); normed =
   * rmsnorm(residual) · weight. */
  private addNorm(weight: DevicePtr, tokens: number): void {
    const { ws, comm, config: c } = this;
    const h = c.hiddenSize;
    if (comm?.allReduceAddRmsnorm?.(ws.normed, ws.residual, ws.out, weight, tokens, h, c.rmsNormEps)) return;
    comm?.allReduceSum(ws.out, tokens * h);
    this.backend.ops.addRmsnorm(ws.normed, ws.residual, ws.out, weight, tokens, h, c.rmsNormEps);
  }

  free(): void {
    this.ws.free();
    this.head?.free();
    this.backend.free(this.cosSin);
  }
}
