// One request run straight through the model, without the scheduler: prompt chunks through the extend
// path, then token-by-token decode, with KV slots handed out in order. Used by `bun run generate` and the
// model tests; the engine (src/engine/) does the same for many requests at once.
import type { Backend } from "../backend/backend.ts";
import { KvStorage } from "../cache/kv_storage.ts";
import type { DecoderModel } from "./decoder.ts";

export class SingleSequence {
  readonly kv: KvStorage;
  private length = 0;

  constructor(
    private readonly backend: Backend,
    private readonly model: DecoderModel,
    maxLength: number,
  ) {
    const c = model.config;
    this.kv = new KvStorage(backend, {
      layers: c.numLayers, kvHeads: model.shard.kvHeads, headDim: c.headDim, slots: maxLength, rows: 1, maxSeqLen: maxLength,
    });
  }

  /** Feeds `ids` as one forward (prefill/extend, or decode for one token); returns fp32 logits per row. */
  feed(ids: number[], allPositions = false): Float32Array[] {
    const n = ids.length;
    const start = this.length;
    const slots = Int32Array.from({ length: n }, (_, i) => start + i);
    this.kv.writePageTable(0, start, slots);
    const out = this.model.forward({
      mode: n === 1 ? "decode" : "prefill",
      inputIds: Int32Array.from(ids),
      positions: slots,
      outSlots: slots,
      qoIndptr: Int32Array.of(0, n),
      kvLens: Int32Array.of(start + n),
      rows: Int32Array.of(0),
    }, this.kv, allPositions ? "all" : "last");
    this.length += n;
    const vocab = this.model.config.vocabSize;
    const all = new Float32Array(out.rows * vocab);
    this.backend.download(all, out.logits);
    return Array.from({ length: out.rows }, (_, r) => all.subarray(r * vocab, (r + 1) * vocab));
  }

  free(): void {
    this.kv.free();
  }
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
