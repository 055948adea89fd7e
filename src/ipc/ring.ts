// Single-producer single-consumer ring of variable-length Int32 records over one SharedArrayBuffer.
//
// A record is one length word followed by that many payload words; a record may be split across the end
// of the data area (no skip markers, no wasted space). `head` (next write) and `tail` (next read) are word
// positions in [0, capacity); one word always stays free so that head === tail means empty. Only the
// producer stores head and only the consumer stores tail; payload words are written with plain stores
// before head is published with Atomics.store, which orders them for the consumer's Atomics.load.
//
// Wake-ups go through a separate sequence word: the producer bumps it and notifies once per batch, and
// the consumer reads it *before* checking for data, so a notify between its check and its wait makes
// Atomics.wait return "not-equal" instead of sleeping through it.

export type WaitResult = "ok" | "timed-out" | "closed";

const MAGIC = 0x52494e47; // "RING"
// head and tail sit on separate 64-byte lines so producer and consumer do not share a cache line.
const HEAD = 0;
const TAIL = 16;
const SEQ = 32;
const CLOSED = 33;
const CAPACITY = 48;
const MAGIC_WORD = 49;
const HEADER_WORDS = 64;
const HEADER_BYTES = HEADER_WORDS * 4;

/** Default consumer spin before sleeping in waitForData, in microseconds. */
export const DEFAULT_SPIN_US = 5;

export class SharedRing {
  private readonly header: Int32Array;
  private readonly data: Int32Array;
  readonly capacityWords: number;

  private constructor(readonly buffer: SharedArrayBuffer) {
    if (buffer.byteLength < HEADER_BYTES + 8) throw new RangeError(`SharedRing: buffer too small (${buffer.byteLength} bytes)`);
    this.header = new Int32Array(buffer, 0, HEADER_WORDS);
    this.capacityWords = (buffer.byteLength - HEADER_BYTES) / 4;
    this.data = new Int32Array(buffer, HEADER_BYTES, this.capacityWords);
  }

  /** A ring with `capacityWords` data words; the largest record it can hold has capacityWords - 2 words. */
  static create(capacityWords: number): SharedRing {
    if (!Number.isInteger(capacityWords) || capacityWords < 2 || capacityWords > 0x1fff_ffff) {
      throw new RangeError(`SharedRing: capacityWords must be an integer in [2, 2^29) (got ${capacityWords})`);
    }
    const ring = new SharedRing(new SharedArrayBuffer(HEADER_BYTES + capacityWords * 4));
    ring.header[CAPACITY] = capacityWords;
    ring.header[MAGIC_WORD] = MAGIC;
    return ring;
  }

  /** The same ring seen from another thread (the buffer came through postMessage). */
  static attach(buffer: SharedArrayBuffer): SharedRing {
    const ring = new SharedRing(buffer);
    if (Atomics.load(ring.header, MAGIC_WORD) !== MAGIC || Atomics.load(ring.header, CAPACITY) !== ring.capacityWords) {
      throw new Error("SharedRing.attach: buffer was not made by SharedRing.create");
    }
    return ring;
  }

  get closed(): boolean {
    return Atomics.load(this.header, CLOSED) !== 0;
  }

  /** Words a producer could still write now, length words included. */
  get freeWords(): number {
    return this.capacityWords - 1 - this.usedWords(Atomics.load(this.header, HEAD), Atomics.load(this.header, TAIL));
  }

  get isEmpty(): boolean {
    return Atomics.load(this.header, HEAD) === Atomics.load(this.header, TAIL);
  }

  // ---- producer ----

  /**
   * Appends one record; false when it does not fit now (nothing is written). Readers see it at once, but a
   * sleeping consumer wakes only on notify(). Throws when the ring is closed or the record can never fit.
   */
  tryWrite(words: Int32Array | readonly number[]): boolean {
    return this.writeMany([words]) === 1;
  }

  /**
   * Appends records in order while they fit and publishes them together; returns how many were written.
   * A record that could never fit throws before anything is written.
   */
  writeMany(records: readonly (Int32Array | readonly number[])[]): number {
    if (this.closed) throw new Error("SharedRing: write to a closed ring");
    const cap = this.capacityWords;
    for (const words of records) {
      if (words.length + 2 > cap) throw new RangeError(`SharedRing: a ${words.length}-word record can never fit in ${cap} words`);
    }
    const tail = Atomics.load(this.header, TAIL);
    let head = Atomics.load(this.header, HEAD);
    let written = 0;
    for (const words of records) {
      const need = words.length + 1;
      if (cap - 1 - this.usedWords(head, tail) < need) break;
      this.data[head] = words.length;
      this.put(words, head + 1 === cap ? 0 : head + 1);
      head = (head + need) % cap;
      written++;
    }
    if (written > 0) Atomics.store(this.header, HEAD, head);
    return written;
  }

  /** Wakes the consumer; call once per batch of writes. */
  notify(): void {
    Atomics.add(this.header, SEQ, 1);
    Atomics.notify(this.header, SEQ);
  }

  /** Marks the ring closed and wakes every waiter. Records already written stay readable. */
  close(): void {
    Atomics.store(this.header, CLOSED, 1);
    this.notify();
  }

  // ---- consumer ----

  /** A copy of the next record, or null when the ring is empty. */
  read(): Int32Array | null {
    const cap = this.capacityWords;
    const tail = Atomics.load(this.header, TAIL);
    const head = Atomics.load(this.header, HEAD);
    if (tail === head) return null;
    const n = this.data[tail];
    if (n < 0 || n + 1 > this.usedWords(head, tail)) throw new Error(`SharedRing: corrupted record length ${n} at ${tail}`);
    const out = new Int32Array(n);
    const start = tail + 1 === cap ? 0 : tail + 1;
    const first = Math.min(n, cap - start);
    out.set(this.data.subarray(start, start + first));
    if (first < n) out.set(this.data.subarray(0, n - first), first);
    Atomics.store(this.header, TAIL, (tail + 1 + n) % cap);
    return out;
  }

  /**
   * Blocks (Atomics.wait; worker threads only) until a record is readable, the ring is closed and drained,
   * or `timeoutMs` passes. Spins `spinUs` first: a producer that answers within microseconds is then seen
   * without the cost of a sleep and a wake-up.
   */
  waitForData(timeoutMs: number, spinUs: number = DEFAULT_SPIN_US): WaitResult {
    const ready = this.ready();
    if (ready !== null) return ready;
    const now = performance.now();
    const deadline = now + timeoutMs;
    const spinEnd = now + Math.min(spinUs / 1000, timeoutMs);
    while (performance.now() < spinEnd) {
      if (!this.isEmpty) return "ok";
    }
    for (;;) {
      const seq = Atomics.load(this.header, SEQ);
      const state = this.ready();
      if (state !== null) return state;
      const left = deadline - performance.now();
      if (left <= 0) return "timed-out";
      Atomics.wait(this.header, SEQ, seq, left);
    }
  }

  /** Like waitForData without blocking the thread (Atomics.waitAsync; for the main thread). */
  async waitForDataAsync(timeoutMs: number): Promise<WaitResult> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const seq = Atomics.load(this.header, SEQ);
      const state = this.ready();
      if (state !== null) return state;
      const left = deadline - performance.now();
      if (left <= 0) return "timed-out";
      const wait = Atomics.waitAsync(this.header, SEQ, seq, left);
      if (wait.async) await wait.value;
    }
  }

  // Data wins over closed, so a consumer drains what was written before close().
  private ready(): WaitResult | null {
    if (!this.isEmpty) return "ok";
    return this.closed ? "closed" : null;
  }

  private usedWords(head: number, tail: number): number {
    const used = head - tail;
    return used < 0 ? used + this.capacityWords : used;
  }

  private put(words: Int32Array | readonly number[], start: number): void {
    const n = words.length;
    const first = Math.min(n, this.capacityWords - start);
    if (words instanceof Int32Array) {
      this.data.set(words.subarray(0, first), start);
      if (first < n) this.data.set(words.subarray(first), 0);
      return;
    }
    for (let i = 0; i < first; i++) this.data[start + i] = words[i];
    for (let i = first; i < n; i++) this.data[i - first] = words[i];
  }
}
