// The prefix cache maps token prefixes to the KV slots that hold them (slot indices only, no device memory).
//
// How the scheduler uses it (m = the request's match, ownSlots = the request's slots per token position):
// - Admission: `m = cache.match(prompt)`, `cache.lock(m.handle)`; the request's slots are m.slots for
//   [0, m.length) (owned by the cache) followed by newly allocated pool pages for the rest. When the pool is
//   short, `pool.free(cache.evict(shortfall))` first; the lock taken just before keeps m's own prefix safe.
// - After a prefill chunk, or on finish: with tokens = every token whose KV is computed,
//   `{ alreadyCached, handle } = cache.insert(tokens, ownSlots)`; the cache now owns ownSlots[alreadyCached : len]
//   (len = handle.length = tokens.length aligned down to the page size). The caller then
//     1. frees ownSlots[m.length : alreadyCached]: duplicates of pages another request cached meanwhile;
//     2. on finish, frees ownSlots[handle.length : end of its allocation] (the partial page and any unused
//        reservation); a continuing request keeps that tail;
//     3. `cache.unlock(m.handle)`;
//     4. if continuing: `cache.lock(handle)`, takes `cache.handleSlots(handle)` as its slots for [0, len)
//        (the duplicates freed in step 1 must no longer be read) and uses `handle` as its new m.
// - Every slot is at any time free in the pool, owned by one cache node, or owned by one live request.

import { NaiveCache } from "./naive_cache.ts";
import { RadixCache } from "./radix_cache.ts";

/** An opaque cache node; length = tokens from the root to the end of the node. */
export interface CacheHandle {
  readonly length: number;
}

export interface MatchResult {
  handle: CacheHandle;
  length: number;
  slots: Int32Array; // slots.length === length
}

export interface PrefixCache {
  readonly pageSize: number;
  /** Longest cached prefix of tokens[0 : tokens.length - 1] (at least one token is always left to compute, so logits exist), page aligned. Does not lock. */
  match(tokens: ArrayLike<number>): MatchResult;
  /** Ref-count lock/unlock of every node from handle up to the root: locked nodes are never evicted. */
  lock(handle: CacheHandle): void;
  unlock(handle: CacheHandle): void;
  /**
   * Caches tokens[0:len] → slots[0:len] (len = largest multiple of pageSize ≤ tokens.length; slots.length ≥ len).
   * Returns how many leading tokens were ALREADY cached (page aligned) and the handle of the node ending at len.
   * The new part takes ownership of slots[alreadyCached:len].
   */
  insert(tokens: ArrayLike<number>, slots: Int32Array): { alreadyCached: number; handle: CacheHandle };
  /** The cache's slots for tokens [0, handle.length); the handle must still be cached (e.g. locked). */
  handleSlots(handle: CacheHandle): Int32Array;
  /** Evicts least-recently-used unlocked leaves until at least `slots` token slots are released or nothing is evictable; returns the released slots (whole pages) for the caller to free in the pool. */
  evict(slots: number): Int32Array;
  readonly evictableSlots: number; // cached slots in unlocked nodes
  readonly protectedSlots: number; // cached slots in locked nodes
  /** Drops every unlocked node, returning their slots; throws if anything is locked. */
  reset(): Int32Array;
}

export function createPrefixCache(kind: "radix" | "naive", pageSize: number): PrefixCache {
  switch (kind) {
    case "radix":
      return new RadixCache(pageSize);
    case "naive":
      return new NaiveCache(pageSize);
    default:
      throw new Error(`unknown prefix cache kind ${String(kind)}`);
  }
}
