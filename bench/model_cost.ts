// Bytes and FLOPs of one forward of a decoder model, counted from its config the way
// ../shared/reference/performance-anchors.md counts them: bf16 weights, every weight read once per step
// except the input embedding table (only B rows of it are read; a tied table is counted once, as the LM
// head), KV read for every cached token, FLOPs = 2 per multiply-add.
import type { ModelConfig } from "../src/model/config.ts";

const BF16 = 2;

export interface ModelCost {
  /** All parameters, the input embedding included (what a checkpoint holds). */
  params: number;
  /** Bytes of weights one forward reads. */
  weightBytesPerStep: number;
  /** K and V of one token over all layers. */
  kvBytesPerToken: number;
  /** FLOPs of the layers' linear projections per token (no attention, no LM head). */
  linearFlopsPerToken: number;
  /** FLOPs of the LM head per logit row. */
  lmHeadFlopsPerRow: number;
  /** FLOPs of QKᵀ and PV per (query, visible key) pair over all layers and heads. */
  attentionFlopsPerPair: number;
}

export function modelCost(c: ModelConfig): ModelCost {
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const h = c.hiddenSize;
  const linear = h * (qDim + 2 * kvDim) + qDim * h + 2 * c.intermediateSize * h + c.intermediateSize * h;
  const small = 2 * h + (c.qkNorm ? 2 * c.headDim : 0) + (c.qkvBias ? qDim + 2 * kvDim : 0);
  const layers = c.numLayers * (linear + small);
  const table = c.vocabSize * h;
  return {
    params: layers + h + table + (c.tieWordEmbeddings ? 0 : table),
    weightBytesPerStep: BF16 * (layers + h + table),
    kvBytesPerToken: 2 * c.numLayers * kvDim * BF16,
    linearFlopsPerToken: 2 * c.numLayers * linear,
    lmHeadFlopsPerRow: 2 * h * c.vocabSize,
    attentionFlopsPerPair: 4 * c.numLayers * qDim,
  };
}

/** (query, key) pairs a causal forward of `newTokens` over a KV of `kvLen` (those tokens included) computes. */
export function causalPairs(newTokens: number, kvLen: number): number {
  return newTokens * (kvLen - newTokens) + (newTokens * (newTokens + 1)) / 2;
}

/** FLOPs and bytes of one forward of `batch` requests, each adding `newTokens` to a KV of `kvLen` tokens,
 * with one logit row per request. Bytes: weights + KV read + KV written. */
export function forwardCost(cost: ModelCost, batch: number, newTokens: number, kvLen: number): { flops: number; bytes: number } {
  const tokens = batch * newTokens;
  const flops = tokens * cost.linearFlopsPerToken + batch * cost.lmHeadFlopsPerRow +
    batch * causalPairs(newTokens, kvLen) * cost.attentionFlopsPerPair;
  const bytes = cost.weightBytesPerStep + batch * kvLen * cost.kvBytesPerToken;
  return { flops, bytes };
}
