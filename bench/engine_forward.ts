// What bench:latency times: one forward run the way the engine runs it (forwardStep, which the engine calls
// too): decode batches read their ids from the device token pool and replay their bucket's CUDA graph.
import type { Backend } from "../src/backend/backend.ts";
import { CudaBackend } from "../src/backend/cuda.ts";
import type { KvStorage } from "../src/cache/kv_storage.ts";
import { DecodeGraphs, forwardStep } from "../src/model/decode_graphs.ts";
import type { DecoderModel, ForwardOutput } from "../src/model/decoder.ts";
import type { ForwardBatch } from "../src/model/forward_batch.ts";

export class EngineForward {
  /** Decode graphs (CUDA only; null on the CPU or with cudaGraphMaxBs 0). */
  readonly graphs: DecodeGraphs | null;

  constructor(
    backend: Backend,
    private readonly model: DecoderModel,
    private readonly kv: KvStorage,
    cudaGraphMaxBs: number,
  ) {
    this.graphs = backend instanceof CudaBackend && cudaGraphMaxBs > 0 ? new DecodeGraphs(backend, model, kv, cudaGraphMaxBs) : null;
  }

  /** Runs one step's forward; logits of each request's last token. */
  run(batch: ForwardBatch): ForwardOutput {
    return forwardStep(this.model, this.kv, this.graphs, { ...batch }, "last");
  }

  /** Whether a decode batch of this size replays a graph. */
  replays(batchSize: number): boolean {
    return this.graphs !== null && batchSize <= this.graphs.maxBatch;
  }

  close(): void {
    this.graphs?.close();
  }
}
