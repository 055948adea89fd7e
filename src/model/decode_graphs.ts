// CUDA graphs of the decode forward for batch buckets 1, 2, 4, 8, 16, 24, 32, ... up to a maximum. A batch
// is padded to its bucket with the padding request (the KV storage's padding row and slot, KV length 1),
// its inputs are uploaded into the workspace, and the bucket's graph is replayed.
import type { CudaBackend } from "../backend/cuda.ts";
import { cuda } from "../backend/cudart.ts";
import type { KvStorage } from "../cache/kv_storage.ts";
import type { DecoderModel, ForwardOutput } from "./decoder.ts";
import type { ForwardBatch } from "./forward_batch.ts";

/** One step's forward as the engine runs it: a decode batch reads its ids from the token pool and replays
 * the graph of its bucket when one fits; everything else runs eagerly. Marks decode batches `idsFromPool`. */
export function forwardStep(model: DecoderModel, kv: KvStorage, graphs: DecodeGraphs | null, batch: ForwardBatch,
  logitsFor: "last" | readonly number[]): ForwardOutput {
  if (batch.mode === "decode") {
    batch.idsFromPool = true;
    return graphs?.tryRun(batch) ?? model.forward(batch, kv, "last");
  }
  return model.forward(batch, kv, logitsFor);
}

export function graphBuckets(maxBatch: number): number[] {
  const buckets: number[] = [];
  for (let b = 1; b < Math.min(maxBatch, 16); b *= 2) buckets.push(b);
  for (let b = 16; b < maxBatch; b += b < 64 ? 8 : b < 256 ? 16 : 32) buckets.push(b);
  if (maxBatch > 0) buckets.push(maxBatch);
  return buckets;
}

interface Captured {
  graph: number;
  exec: number;
}

export class DecodeGraphs {
  readonly buckets: number[];
  private readonly graphs = new Map<number, Captured>();
  readonly captureSeconds: number;

  constructor(
    private readonly backend: CudaBackend,
    private readonly model: DecoderModel,
    private readonly kv: KvStorage,
    maxBatch: number,
  ) {
    this.buckets = graphBuckets(Math.min(maxBatch, model.ws.limits.maxRequests));
    const started = performance.now();
    // Largest first; each bucket runs once eagerly so every GEMM plan exists before capture.
    for (const size of [...this.buckets].reverse()) {
      const shape = model.prepare(this.padded(null, size), kv);
      model.compute(shape, kv);
      backend.synchronize();
      cuda.beginCapture(backend.stream);
      try {
        model.compute(shape, kv);
      } finally {
        const graph = cuda.endCapture(backend.stream);
        this.graphs.set(size, { graph, exec: cuda.instantiate(graph) });
      }
    }
    backend.synchronize();
    this.captureSeconds = (performance.now() - started) / 1000;
  }

  get maxBatch(): number {
    return this.buckets[this.buckets.length - 1] ?? 0;
  }

  /** Replays the graph of the batch's bucket, or returns null when no graph fits (prefill, too large). */
  tryRun(batch: ForwardBatch): ForwardOutput | null {
    const n = batch.kvLens.length;
    if (batch.mode !== "decode" || !batch.idsFromPool || n > this.maxBatch) return null;
    const size = this.buckets.find((b) => b >= n)!;
    this.model.prepare(this.padded(batch, size), this.kv);
    cuda.launchGraph(this.graphs.get(size)!.exec, this.backend.stream);
    return { logits: this.model.ws.logits, rows: n };
  }

  /** The batch (or none) followed by padding requests up to `size`. */
  private padded(batch: ForwardBatch | null, size: number): ForwardBatch {
    const b: ForwardBatch = {
      mode: "decode", idsFromPool: true,
      inputIds: new Int32Array(size),
      positions: new Int32Array(size),
      outSlots: new Int32Array(size).fill(this.kv.paddingSlot),
      qoIndptr: Int32Array.from({ length: size + 1 }, (_, i) => i),
      kvLens: new Int32Array(size).fill(1),
      rows: new Int32Array(size).fill(this.kv.paddingRow),
    };
    if (batch) {
      b.positions.set(batch.positions);
      b.outSlots.set(batch.outSlots);
      b.kvLens.set(batch.kvLens);
      b.rows.set(batch.rows);
    }
    return b;
  }

  close(): void {
    for (const g of this.graphs.values()) cuda.destroyGraph(g.graph, g.exec);
    this.graphs.clear();
  }
}
