// Shared state of one tensor-parallel group of rank Workers: a failure flag with the failing rank and its
// reason (first failure wins), and a doorbell word that collectives wait on. Any rank that fails marks
// the group failed and rings the doorbell, so every other rank's wait ends at once with the same error
// instead of hanging.
import { CollectiveError } from "../backend/communicator.ts";

const DOORBELL = 0;
const FAILED = 1; // 0 = fine, 1 = a failure is being written, 2 = failure published
const ORIGIN = 2;
const REASON_BYTES = 3;
const HEADER_WORDS = 16;
const MAX_RANKS = 64;
const MAX_REASON_BYTES = 2048;

export class GroupControl {
  private readonly words: Int32Array;
  private readonly steps: Int32Array; // [rank]: the last step the rank finished launching
  private readonly reason: Uint8Array;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer, 0, HEADER_WORDS);
    this.steps = new Int32Array(buffer, HEADER_WORDS * 4, MAX_RANKS);
    this.reason = new Uint8Array(buffer, (HEADER_WORDS + MAX_RANKS) * 4, MAX_REASON_BYTES);
  }

  static create(): GroupControl {
    return new GroupControl(new SharedArrayBuffer((HEADER_WORDS + MAX_RANKS) * 4 + MAX_REASON_BYTES));
  }

  /** Progress, for a watchdog outside the ranks (a rank stuck in a GPU call cannot report itself). */
  markStep(rank: number, step: number): void {
    if (rank < MAX_RANKS) Atomics.store(this.steps, rank, step);
  }

  stepOf(rank: number): number {
    return rank < MAX_RANKS ? Atomics.load(this.steps, rank) : 0;
  }

  static attach(buffer: SharedArrayBuffer): GroupControl {
    return new GroupControl(buffer);
  }

  /** Marks the group failed (the first call wins) and wakes every waiter. */
  fail(rank: number, reason: string): void {
    if (Atomics.compareExchange(this.words, FAILED, 0, 1) === 0) {
      const bytes = new TextEncoder().encode(reason).subarray(0, MAX_REASON_BYTES);
      this.reason.set(bytes);
      this.words[ORIGIN] = rank;
      this.words[REASON_BYTES] = bytes.length;
      Atomics.store(this.words, FAILED, 2);
    }
    this.ring();
  }

  /** The first failure, or null while the group is fine. */
  get failure(): CollectiveError | null {
    let state = Atomics.load(this.words, FAILED);
    if (state === 0) return null;
    while (state === 1) state = Atomics.load(this.words, FAILED); // the writer is a few stores away
    const text = new TextDecoder().decode(this.reason.slice(0, this.words[REASON_BYTES]));
    return new CollectiveError(this.words[ORIGIN], text);
  }

  throwIfFailed(): void {
    const f = this.failure;
    if (f) throw f;
  }

  /** Current doorbell value: read it before checking a condition, then wait(value). */
  get doorbell(): number {
    return Atomics.load(this.words, DOORBELL);
  }

  ring(): void {
    Atomics.add(this.words, DOORBELL, 1);
    Atomics.notify(this.words, DOORBELL);
  }

  /** Sleeps until the doorbell moves past `seen` or `ms` pass. */
  wait(seen: number, ms: number): void {
    Atomics.wait(this.words, DOORBELL, seen, ms);
  }
}
