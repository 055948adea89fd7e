// The CPU backend's Communicator: the rank Workers of one process exchange data through a
// SharedArrayBuffer. Each collective is a barrier between two copies: every rank copies its part into
// its slot, announces its arrival, waits for all ranks, then reads every slot. All-reduce sums the slots
// in rank order 0, 1, …, N−1 in fp32 and rounds once to bf16, so every rank gets identical bits.
// Slots are double-buffered by collective parity: a rank writes collective k+2's slot only after all
// ranks arrived at k+1, i.e. finished reading k. Larger collectives run in slot-sized pieces.
// A wait that outlasts the timeout fails the whole group (GroupControl) naming the ranks that never came.
import type { Backend, DevicePtr } from "./backend.ts";
import type { Communicator } from "./communicator.ts";
import type { GroupControl } from "../ipc/group_control.ts";

const ARRIVE_STRIDE = 16; // words between ranks' arrival counters (one cache line each)
const DATA_OFFSET = 4096; // bytes; room for 64 ranks' counters
const SPIN_US = 20;
export const DEFAULT_SLOT_BYTES = 4 << 20;
export const DEFAULT_COLLECTIVE_TIMEOUT_MS = 120_000;

export class SharedMemoryCommunicator implements Communicator {
  private readonly arrivals: Int32Array;
  private readonly slotBytes: number;
  private seq = 0;
  // fp32 scratch for the all-reduce: the running sum and one slot widened from bf16
  private sum = new Float32Array(0);
  private widened = new Float32Array(0);
  private rounded = new Uint16Array(0);

  /** The shared memory of a group of `size` ranks (made once, on the main thread, sent to every rank). */
  static createBuffer(size: number, slotBytes = DEFAULT_SLOT_BYTES): SharedArrayBuffer {
    if (!Number.isInteger(size) || size < 1 || size * ARRIVE_STRIDE * 4 > DATA_OFFSET) throw new Error(`bad group size ${size}`);
    if (slotBytes < 64 || slotBytes % 8 !== 0) throw new Error(`bad slot size ${slotBytes}`);
    return new SharedArrayBuffer(DATA_OFFSET + 2 * size * slotBytes);
  }

  constructor(
    private readonly backend: Backend,
    private readonly control: GroupControl,
    private readonly buffer: SharedArrayBuffer,
    readonly rank: number,
    readonly size: number,
    private readonly timeoutMs = DEFAULT_COLLECTIVE_TIMEOUT_MS,
  ) {
    this.slotBytes = (buffer.byteLength - DATA_OFFSET) / (2 * size);
    if (!Number.isInteger(this.slotBytes) || this.slotBytes % 8 !== 0) throw new Error("communicator buffer was not made for this group size");
    if (rank < 0 || rank >= size) throw new Error(`rank ${rank} is outside [0, ${size})`);
    this.arrivals = new Int32Array(buffer, 0, size * ARRIVE_STRIDE);
  }

  allReduceSum(buf: DevicePtr, count: number): void {
    const per = this.slotBytes / 2;
    this.ensureScratch(Math.min(per, count));
    for (let off = 0; off < count; off += per) {
      const n = Math.min(per, count - off);
      const parity = (this.seq + 1) & 1;
      this.backend.download(this.bf16Slot(parity, this.rank, n), buf + off * 2);
      this.arrive("all-reduce");
      const sum = this.sum;
      const sumBits = new Uint32Array(sum.buffer, 0, n);
      const widenedBits = new Uint32Array(this.widened.buffer, 0, n);
      const first = this.bf16Slot(parity, 0, n);
      for (let i = 0; i < n; i++) sumBits[i] = first[i] << 16;
      for (let r = 1; r < this.size; r++) {
        const slot = this.bf16Slot(parity, r, n);
        for (let i = 0; i < n; i++) widenedBits[i] = slot[i] << 16;
        const w = this.widened;
        for (let i = 0; i < n; i++) sum[i] += w[i];
      }
      const out = this.rounded;
      for (let i = 0; i < n; i++) {
        const bits = sumBits[i];
        out[i] = (bits & 0x7fffffff) > 0x7f800000 ? (bits >>> 16) | 0x40 : (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
      }
      this.backend.upload(buf + off * 2, out.subarray(0, n));
    }
  }

  allGather(recv: DevicePtr, send: DevicePtr, count: number): void {
    const per = this.slotBytes / 4;
    for (let off = 0; off < count; off += per) {
      const n = Math.min(per, count - off);
      const parity = (this.seq + 1) & 1;
      this.backend.download(this.f32Slot(parity, this.rank, n), send + off * 4);
      this.arrive("all-gather");
      for (let r = 0; r < this.size; r++) this.backend.upload(recv + (r * count + off) * 4, this.f32Slot(parity, r, n));
    }
  }

  close(): void {
    this.sum = this.widened = new Float32Array(0);
    this.rounded = new Uint16Array(0);
  }

  abort(): void {
    this.close();
  }

  private bf16Slot(parity: number, rank: number, n: number): Uint16Array {
    return new Uint16Array(this.buffer, DATA_OFFSET + (parity * this.size + rank) * this.slotBytes, n);
  }

  private f32Slot(parity: number, rank: number, n: number): Float32Array {
    return new Float32Array(this.buffer, DATA_OFFSET + (parity * this.size + rank) * this.slotBytes, n);
  }

  private ensureScratch(n: number): void {
    if (this.sum.length >= n) return;
    this.sum = new Float32Array(n);
    this.widened = new Float32Array(n);
    this.rounded = new Uint16Array(n);
  }

  private arrived(seq: number): boolean {
    for (let r = 0; r < this.size; r++) if (((Atomics.load(this.arrivals, r * ARRIVE_STRIDE) - seq) | 0) < 0) return false;
    return true;
  }

  /** Announces this rank's arrival at the next collective and waits for every rank's. */
  private arrive(what: string): void {
    const seq = (this.seq = (this.seq + 1) | 0);
    this.control.throwIfFailed();
    Atomics.store(this.arrivals, this.rank * ARRIVE_STRIDE, seq);
    this.control.ring();
    const start = performance.now();
    while (performance.now() - start < SPIN_US / 1000) if (this.arrived(seq)) return;
    const deadline = start + this.timeoutMs;
    for (;;) {
      const bell = this.control.doorbell;
      this.control.throwIfFailed();
      if (this.arrived(seq)) return;
      const left = deadline - performance.now();
      if (left <= 0) {
        const missing = [];
        for (let r = 0; r < this.size; r++) {
          if (((Atomics.load(this.arrivals, r * ARRIVE_STRIDE) - seq) | 0) < 0) missing.push(r);
        }
        this.control.fail(this.rank, `${what} #${seq} timed out after ${(this.timeoutMs / 1000).toFixed(1)} s waiting for ` +
          `rank${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`);
        this.control.throwIfFailed();
      }
      this.control.wait(bell, Math.min(left, 1000));
    }
  }
}
