// The LM head of a tensor-parallel rank: logits for its slice of the vocabulary (only the rows to be
// sampled), an all-gather of every rank's block, and the blocks placed side by side into full-vocabulary
// logits, identical on every rank so that every rank samples the same tokens.
import type { Backend, DevicePtr } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
import type { ShardLayout } from "./shard.ts";

export class VocabParallelHead {
  private readonly local: DevicePtr; // fp32 [maxRows, vocabLocal], sent padded to maxRows · vocabChunk
  private readonly gathered: DevicePtr; // fp32 [size][rows · vocabChunk]
  readonly bytes: number;

  constructor(
    private readonly backend: Backend,
    private readonly shard: ShardLayout,
    private readonly comm: Communicator,
    private readonly vocab: number,
    private readonly hidden: number,
    readonly maxRows: number,
  ) {
    const block = maxRows * shard.vocabChunk * 4;
    this.local = backend.alloc(block);
    this.gathered = backend.alloc(shard.size * block);
    this.bytes = (1 + shard.size) * block;
  }

  /** out[rows, vocab] (fp32) = x[rows, hidden] · lmHead^T over the whole vocabulary, on every rank. */
  logits(out: DevicePtr, x: DevicePtr, lmHead: DevicePtr, rows: number): void {
    const { backend, shard, vocab } = this;
    if (rows > this.maxRows) throw new Error(`LM head: ${rows} rows > ${this.maxRows}`);
    backend.ops.gemm(this.local, x, lmHead, 0, rows, shard.vocabLocal, this.hidden, this.hidden, true);
    const count = rows * shard.vocabChunk;
    this.comm.allGather(this.gathered, this.local, count);
    // Rank r's block holds [rows, its vocabLocal] contiguous; it becomes columns [r · chunk, …) of out.
    // (On a GPU this is one strided 2-D copy per rank.)
    for (let r = 0; r < shard.size; r++) {
      const start = r * shard.vocabChunk;
      const width = Math.min(shard.vocabChunk, vocab - start);
      for (let i = 0; i < rows; i++) {
        backend.copy(out + (i * vocab + start) * 4, this.gathered + (r * count + i * width) * 4, width * 4);
      }
    }
  }

  free(): void {
    this.backend.free(this.local);
    this.backend.free(this.gathered);
  }
}
