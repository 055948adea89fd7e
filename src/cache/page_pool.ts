// Allocator of KV token slots in whole pages: slot = page * pageSize + offset, slots [0, numPages * pageSize).
// Free pages sit on a stack of page ids, so allocate and free cost O(pages).

export class KvPagePool {
  readonly numPages: number;
  readonly pageSize: number;
  private readonly stack: Int32Array; // free page ids in stack[0 : top)
  private top: number;
  private readonly freeFlag: Uint8Array; // 1 = page is free

  constructor(numPages: number, pageSize: number) {
    if (!Number.isInteger(numPages) || numPages < 0) throw new Error(`KvPagePool: bad numPages ${numPages}`);
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new Error(`KvPagePool: bad pageSize ${pageSize}`);
    if (numPages * pageSize > 0x7fffffff) throw new Error(`KvPagePool: ${numPages} x ${pageSize} slots overflow int32`);
    this.numPages = numPages;
    this.pageSize = pageSize;
    this.stack = new Int32Array(numPages);
    // Reversed so that a fresh pool hands out pages 0, 1, 2, ... in order.
    for (let i = 0; i < numPages; i++) this.stack[i] = numPages - 1 - i;
    this.top = numPages;
    this.freeFlag = new Uint8Array(numPages).fill(1);
  }

  get freePages(): number {
    return this.top;
  }

  get freeSlots(): number {
    return this.top * this.pageSize;
  }

  get totalSlots(): number {
    return this.numPages * this.pageSize;
  }

  get usedSlots(): number {
    return (this.numPages - this.top) * this.pageSize;
  }

  isFree(page: number): boolean {
    if (!Number.isInteger(page) || page < 0 || page >= this.numPages) throw new Error(`KvPagePool: no page ${page}`);
    return this.freeFlag[page] === 1;
  }

  /** Token slots of `pages` whole pages, or null (and nothing allocated) when fewer pages are free. */
  allocate(pages: number): Int32Array | null {
    if (!Number.isInteger(pages) || pages < 0) throw new Error(`KvPagePool: bad page count ${pages}`);
    if (pages > this.top) return null;
    const ps = this.pageSize;
    const out = new Int32Array(pages * ps);
    for (let i = 0; i < pages; i++) {
      const page = this.stack[--this.top];
      this.freeFlag[page] = 0;
      const base = page * ps;
      for (let j = 0; j < ps; j++) out[i * ps + j] = base + j;
    }
    return out;
  }

  /** Returns whole pages; throws (freeing nothing) on a malformed run, an unknown page or a double free. */
  free(slots: Int32Array): void {
    const ps = this.pageSize;
    if (slots.length % ps !== 0) throw new Error(`KvPagePool.free: ${slots.length} slots is not a whole number of pages of ${ps}`);
    const pages = slots.length / ps;
    for (let i = 0; i < pages; i++) {
      const first = slots[i * ps];
      if (first % ps !== 0) throw new Error(`KvPagePool.free: run ${i} starts at slot ${first}, not a page boundary`);
      const page = first / ps;
      if (page < 0 || page >= this.numPages) throw new Error(`KvPagePool.free: slot ${first} is outside the pool`);
      for (let j = 1; j < ps; j++) {
        if (slots[i * ps + j] !== first + j) throw new Error(`KvPagePool.free: run ${i} (page ${page}) is not consecutive`);
      }
      if (this.freeFlag[page] === 1) throw new Error(`KvPagePool.free: double free of page ${page}`);
    }
    // Mark in a second pass so that a page repeated within `slots` is caught with nothing freed.
    for (let i = 0; i < pages; i++) {
      const page = slots[i * ps] / ps;
      if (this.freeFlag[page] === 1) {
        for (let k = 0; k < i; k++) this.freeFlag[slots[k * ps] / ps] = 0;
        throw new Error(`KvPagePool.free: double free of page ${page}`);
      }
      this.freeFlag[page] = 1;
    }
    for (let i = 0; i < pages; i++) this.stack[this.top++] = slots[i * ps] / ps;
  }
}
