// Which part of the model one tensor-parallel rank holds. Attention heads and the MLP's intermediate
// dimension are split evenly (merged QKV and gate_up column-parallel, o_proj and down_proj row-parallel);
// when there are more ranks than KV heads, each KV head is replicated on the ranks whose q heads read it.
// The vocabulary is split in chunks of ceil(vocab / size) rows (the last rank may hold fewer).
import type { ModelConfig } from "./config.ts";

export interface TensorParallel {
  rank: number;
  size: number;
}

export interface ShardLayout extends TensorParallel {
  qHeads: number; // local q heads
  qHeadStart: number; // first global q head
  kvHeads: number; // local KV heads
  kvHeadStart: number; // first global KV head
  interLocal: number; // local slice of the MLP intermediate dimension
  interStart: number;
  vocabChunk: number; // ceil(vocab / size): the row count every rank's logits block is padded to
  vocabStart: number;
  vocabLocal: number;
}

export class ShardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShardError";
  }
}

export const SINGLE_RANK: TensorParallel = { rank: 0, size: 1 };

/** The slice of rank `tp.rank`; throws a ShardError naming the dimension that does not divide. */
export function shardLayout(c: ModelConfig, tp: TensorParallel): ShardLayout {
  const { rank, size } = tp;
  if (!Number.isInteger(size) || size < 1) throw new ShardError(`tensor-parallel size must be an integer ≥ 1 (got ${size})`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new ShardError(`rank ${rank} is outside [0, ${size})`);
  const H = c.numHeads;
  const KV = c.numKvHeads;
  if (H % size !== 0) throw new ShardError(`--tp ${size} does not divide num_attention_heads ${H}`);
  if (KV % size !== 0 && size % KV !== 0) {
    throw new ShardError(`--tp ${size} and num_key_value_heads ${KV} must divide one another (KV heads are split or replicated)`);
  }
  if (c.intermediateSize % size !== 0) throw new ShardError(`--tp ${size} does not divide intermediate_size ${c.intermediateSize}`);
  const qHeads = H / size;
  const kvHeads = Math.max(1, KV / size);
  // With size > KV, ranks r·KV/size … share a KV head: exactly the one their q heads map to.
  const kvHeadStart = Math.floor((rank * KV) / size);
  const vocabChunk = Math.ceil(c.vocabSize / size);
  const vocabStart = rank * vocabChunk;
  const vocabLocal = Math.min(vocabChunk, c.vocabSize - vocabStart);
  if (vocabLocal < 1) throw new ShardError(`vocab_size ${c.vocabSize} is too small for --tp ${size}`);
  const interLocal = c.intermediateSize / size;
  return {
    rank, size, qHeads, qHeadStart: rank * qHeads, kvHeads, kvHeadStart, interLocal, interStart: rank * interLocal,
    vocabChunk, vocabStart, vocabLocal,
  };
}

/** The config as one rank's layers see it: local head counts and intermediate size (vocab stays full,
 * since every rank ends with full-vocabulary logits). */
export function localConfig(c: ModelConfig, s: ShardLayout): ModelConfig {
  return { ...c, numHeads: s.qHeads, numKvHeads: s.kvHeads, intermediateSize: s.interLocal };
}
