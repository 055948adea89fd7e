// The KV cache tensors (per layer, [slots + 1, kvHeads, headDim] bf16 for K and V) and the page table:
// one int32 row of token-level slot indices per request row (kernels see page size 1). The extra slot and
// the last page-table row belong to the padding request of CUDA-graph batches, which writes only there.
import type { Backend, DevicePtr } from "../backend/backend.ts";

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  slots: number; // token slots in the pool
  rows: number; // page-table rows (request slots, including the padding row)
  maxSeqLen: number; // page-table row length
}

export class KvStorage {
  readonly k: DevicePtr[] = [];
  readonly v: DevicePtr[] = [];
  readonly pageTable: DevicePtr;
  readonly bytes: number;
  readonly paddingSlot: number;
  readonly paddingRow: number;
  /** Called after every page-table write (rank 0 of a tensor-parallel group forwards them to its peers). */
  onPageTableWrite: ((row: number, start: number, slots: Int32Array) => void) | null = null;

  constructor(
    private readonly backend: Backend,
    readonly shape: KvShape,
  ) {
    const perLayer = (shape.slots + 1) * shape.kvHeads * shape.headDim * 2;
    this.paddingSlot = shape.slots;
    this.paddingRow = shape.rows - 1;
    for (let l = 0; l < shape.layers; l++) {
      this.k.push(backend.alloc(perLayer));
      this.v.push(backend.alloc(perLayer));
    }
    this.pageTable = backend.alloc(shape.rows * shape.maxSeqLen * 4);
    backend.fill(this.pageTable, 0, shape.rows * shape.maxSeqLen * 4);
    this.writePageTable(this.paddingRow, 0, Int32Array.of(this.paddingSlot));
    this.bytes = 2 * shape.layers * perLayer + shape.rows * shape.maxSeqLen * 4;
  }

  /** page_table[row, start : start + slots.length] = slots */
  writePageTable(row: number, start: number, slots: Int32Array): void {
    if (row < 0 || row >= this.shape.rows || start < 0 || start + slots.length > this.shape.maxSeqLen) {
      throw new Error(`page table write out of range: row ${row}, [${start}, ${start + slots.length})`);
    }
    this.backend.upload(this.pageTable + (row * this.shape.maxSeqLen + start) * 4, slots);
    this.onPageTableWrite?.(row, start, slots);
  }

  free(): void {
    for (const p of [...this.k, ...this.v, this.pageTable]) this.backend.free(p);
  }
}
