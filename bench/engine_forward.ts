// THE HOOK bench:latency times: one forward run the way the engine runs it (Engine.forward in
// src/engine/engine.ts) — decode batches read their input ids from the device token pool and replay the
// CUDA graph of their batch bucket when one fits (DecodeGraphs), everything else runs eagerly through
// DecoderModel.forward. Keep this in step with Engine.forward: if the engine's way of running a step changes
// (other graph buckets, a fused sampler, ...), change it here, so the latency numbers stay the engine's.
import type { Backend } from "../src/backend/backend.ts";
import { CudaBackend } from "../src/backend/cuda.ts";
import type { KvStorage } from "../src/cache/kv_storage.ts";
import { DecodeGraphs } from "../src/model/decode_graphs.ts";
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
    if (batch.mode === "decode") {
      const fromPool: ForwardBatch = { ...batch, idsFromPool: true };
      return this.graphs?.tryRun(fromPool) ?? this.model.forward(fromPool, this.kv, "last");
    }
    return this.model.forward(batch, this.kv, "last");
  }

  /** Whether a decode batch of this size replays a graph. */
  replays(batchSize: number): boolean {
    return this.graphs !== null && batchSize <= this.graphs.maxBatch;
  }

  close(): void {
    this.graphs?.close();
  }
}
