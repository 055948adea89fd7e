// Requests' KV slots: prefix-cache matches at admission, page allocation as they grow (evicting cached
// prefixes when the pool is short), handing computed prefixes to the cache, and returning every slot.
// Admission reserves each request's worst case, so growth never fails once a request is running.
import type { KvPagePool } from "../cache/page_pool.ts";
import type { PrefixCache } from "../cache/prefix_cache.ts";
import type { KvStorage } from "../cache/kv_storage.ts";
import type { Request } from "./request.ts";

export class KvManager {
  private readonly pageSize: number;
  /** Pages that admitted requests may still allocate (their worst case minus what they hold). */
  private outstanding = 0;

  constructor(
    readonly pool: KvPagePool,
    readonly cache: PrefixCache,
    private readonly storage: KvStorage,
  ) {
    this.pageSize = pool.pageSize;
  }

  private pages(tokens: number): number {
    return Math.ceil(tokens / this.pageSize);
  }

  /** Pages a request may still need beyond what it owns. */
  private remainingPages(r: Request): number {
    return this.pages(r.maxLength - r.cachedLength) - (r.allocatedLength - r.cachedLength) / this.pageSize;
  }

  /** Whether a request could ever run, even with an empty pool. */
  fitsPool(r: Request): boolean {
    return this.pages(r.maxLength) <= this.pool.numPages;
  }

  /** Matches the prompt in the cache and reserves the worst case; false (and no change) when it doesn't fit now. */
  tryAdmit(r: Request, row: number): boolean {
    const m = this.cache.match(r.prompt);
    this.cache.lock(m.handle);
    const need = this.pages(r.maxLength - m.length);
    const available = this.pool.freePages + Math.floor(this.cache.evictableSlots / this.pageSize) - this.outstanding;
    if (need > available) {
      this.cache.unlock(m.handle);
      return false;
    }
    r.row = row;
    r.handle = m.handle;
    r.slots.set(m.slots);
    r.cachedLength = r.allocatedLength = r.computedLength = r.cachedPromptTokens = m.length;
    this.outstanding += need;
    if (m.length > 0) this.storage.writePageTable(row, 0, m.slots);
    return true;
  }

  /** Makes sure positions [0, upTo) have slots, allocating (and if needed evicting) whole pages. */
  ensureSlots(r: Request, upTo: number): void {
    if (upTo <= r.allocatedLength) return;
    const pages = this.pages(upTo - r.allocatedLength);
    if (this.pool.freePages < pages) {
      const released = this.cache.evict((pages - this.pool.freePages) * this.pageSize);
      if (released.length) this.pool.free(released);
    }
    const slots = this.pool.allocate(pages);
    if (!slots) throw new Error(`KV pool exhausted despite the reservation (request ${r.uid}): a scheduler bug`);
    r.slots.set(slots, r.allocatedLength);
    this.storage.writePageTable(r.row, r.allocatedLength, slots);
    r.allocatedLength += slots.length;
    this.outstanding -= pages;
  }

  /** Hands the computed tokens to the cache (continuing requests keep reading them through it). */
  cacheComputed(r: Request): void {
    const computed = r.computedLength;
    const { alreadyCached, handle } = this.cache.insert(r.tokens(computed), r.slots.subarray(0, computed));
    this.cache.lock(handle);
    if (r.handle) this.cache.unlock(r.handle);
    r.handle = handle;
    const inserted = handle.length;
    if (inserted <= r.cachedLength) return;
    // Our pages for [cachedLength, alreadyCached) duplicate what another request cached meanwhile.
    if (alreadyCached > r.cachedLength) this.pool.free(r.slots.slice(r.cachedLength, alreadyCached));
    const cached = this.cache.handleSlots(handle);
    r.slots.set(cached);
    this.storage.writePageTable(r.row, r.cachedLength, cached.subarray(r.cachedLength));
    r.cachedLength = inserted;
    r.allocatedLength = Math.max(r.allocatedLength, inserted);
  }

  /** Caches what was computed, returns the rest of the request's pages and its reservation. */
  release(r: Request): void {
    this.cacheComputed(r);
    this.outstanding -= this.remainingPages(r);
    if (r.allocatedLength > r.cachedLength) this.pool.free(r.slots.slice(r.cachedLength, r.allocatedLength));
    if (r.handle) this.cache.unlock(r.handle);
    r.handle = null;
    r.allocatedLength = r.cachedLength;
    r.row = -1;
  }

  get outstandingPages(): number {
    return this.outstanding;
  }

  /** Drops every unlocked cached prefix (POST /flush_cache); false when requests still hold some. */
  flush(): boolean {
    if (this.outstanding > 0 || this.cache.protectedSlots > 0) return false;
    const released = this.cache.reset();
    if (released.length) this.pool.free(released);
    return true;
  }
}
