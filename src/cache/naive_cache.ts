// `--cache naive`: caches nothing, so every request computes its whole prompt and frees all its slots.
import type { CacheHandle, MatchResult, PrefixCache } from "./prefix_cache.ts";

const EMPTY = new Int32Array(0);
const ROOT: CacheHandle = Object.freeze({ length: 0 });

export class NaiveCache implements PrefixCache {
  readonly pageSize: number;
  readonly evictableSlots = 0;
  readonly protectedSlots = 0;

  constructor(pageSize: number) {
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new Error(`NaiveCache: bad pageSize ${pageSize}`);
    this.pageSize = pageSize;
  }

  match(_tokens: ArrayLike<number>): MatchResult {
    return { handle: ROOT, length: 0, slots: EMPTY };
  }

  lock(handle: CacheHandle): void {
    this.check(handle);
  }

  unlock(handle: CacheHandle): void {
    this.check(handle);
  }

  insert(_tokens: ArrayLike<number>, _slots: Int32Array): { alreadyCached: number; handle: CacheHandle } {
    return { alreadyCached: 0, handle: ROOT };
  }

  handleSlots(handle: CacheHandle): Int32Array {
    this.check(handle);
    return EMPTY;
  }

  evict(_slots: number): Int32Array {
    return EMPTY;
  }

  reset(): Int32Array {
    return EMPTY;
  }

  private check(handle: CacheHandle): void {
    if (handle !== ROOT) throw new Error("NaiveCache: foreign handle");
  }
}
