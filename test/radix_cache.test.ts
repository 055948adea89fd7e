import { describe, expect, test } from "bun:test";
import { NaiveCache } from "../src/cache/naive_cache.ts";
import { KvPagePool } from "../src/cache/page_pool.ts";
import { createPrefixCache, type CacheHandle, type PrefixCache } from "../src/cache/prefix_cache.ts";
import { RadixCache } from "../src/cache/radix_cache.ts";
import { type Rng, rng } from "./helpers/rng.ts";

// ---------------------------------------------------------------------------------------------------------
// helpers

const randInt = (r: Rng, n: number): number => Math.floor(r() * n); // [0, n)

function assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);
const slotsFrom = (n: number, from: number): Int32Array => Int32Array.from(range(n, from));

function sorted(a: ArrayLike<number>): number[] {
  return Array.from(a).sort((x, y) => x - y);
}

// ---------------------------------------------------------------------------------------------------------
// unit tests

describe("RadixCache basics", () => {
  test("exact match returns the cached slots", () => {
    const c = new RadixCache(1);
    const toks = [5, 6, 7, 8];
    const ins = c.insert(toks, slotsFrom(4, 100));
    expect(ins.alreadyCached).toBe(0);
    expect(ins.handle.length).toBe(4);
    const m = c.match([5, 6, 7, 8, 9]);
    expect(m.length).toBe(4);
    expect(m.handle).toBe(ins.handle);
    expect([...m.slots]).toEqual([100, 101, 102, 103]);
    expect(c.match([1, 2, 3]).length).toBe(0);
    expect(c.match([]).length).toBe(0);
    c.checkInvariants();
  });

  test("at least one token is left to compute", () => {
    const c1 = new RadixCache(1);
    c1.insert([1, 2, 3, 4, 5, 6, 7, 8], slotsFrom(8, 0));
    expect(c1.match([1, 2, 3, 4, 5, 6, 7, 8]).length).toBe(7);
    expect(c1.match([1]).length).toBe(0);
    const c4 = new RadixCache(4);
    c4.insert([1, 2, 3, 4, 5, 6, 7, 8], slotsFrom(8, 0));
    expect(c4.match([1, 2, 3, 4, 5, 6, 7, 8]).length).toBe(4);
    expect(c4.match([1, 2, 3, 4, 5, 6, 7, 8, 0]).length).toBe(8);
    expect(c4.match([1, 2, 3, 4]).length).toBe(0);
    c1.checkInvariants();
    c4.checkInvariants();
  });

  test.each([1, 4, 16])("page alignment (page size %d)", (ps) => {
    const c = new RadixCache(ps);
    const toks = range(37, 1000);
    const ins = c.insert(toks, slotsFrom(37, 0));
    const aligned = 37 - (37 % ps);
    expect(ins.handle.length).toBe(aligned);
    expect(c.evictableSlots).toBe(aligned);
    for (let len = 0; len <= 40; len++) {
      const q = [...toks.slice(0, Math.min(len, 37)), ...range(Math.max(0, len - 37), 5000)];
      const m = c.match(q);
      const want = Math.min(aligned, Math.max(0, len - 1) - (Math.max(0, len - 1) % ps));
      expect(m.length).toBe(want);
      expect(m.length % ps).toBe(0);
      expect([...m.slots]).toEqual(range(want));
    }
    // a divergence inside a page only matches up to the page before it
    const q = [...toks];
    q[ps + 1] = -1;
    expect(c.match(q).length).toBe(ps + 1 - ((ps + 1) % ps));
    // a slots array longer than the aligned length is fine; the tail is not taken
    const c2 = new RadixCache(ps);
    expect(c2.insert(range(ps + 1), slotsFrom(ps + 3, 0)).handle.length).toBe(ps + 1 - ((ps + 1) % ps));
    expect(() => c2.insert(range(3 * ps), slotsFrom(2 * ps, 0))).toThrow();
    c.checkInvariants();
    c2.checkInvariants();
  });

  test.each([1, 4])("partial match splits the node (page size %d)", (ps) => {
    const c = new RadixCache(ps);
    const a = range(4 * ps, 10);
    const ha = c.insert(a, slotsFrom(4 * ps, 0)).handle;
    expect(c.nodeCount).toBe(1);
    // shares the first 2 pages, then diverges in the middle of the 3rd page
    const b = [...a.slice(0, 2 * ps), ...(ps > 1 ? [a[2 * ps]] : []), 999, 998, 997];
    const m = c.match(b);
    expect(m.length).toBe(2 * ps);
    expect(m.handle.length).toBe(2 * ps);
    expect([...m.slots]).toEqual(range(2 * ps));
    expect(c.nodeCount).toBe(2);
    c.checkInvariants();
    // the old handle still names the node ending at 4 pages and still matches fully
    expect(ha.length).toBe(4 * ps);
    expect(c.isCached(ha)).toBe(true);
    expect(c.match([...a, 0]).handle).toBe(ha);
    expect([...c.handleSlots(ha)]).toEqual(range(4 * ps));
    // inserting b now reuses the 2 shared pages and adds a sibling branch
    const ib = c.insert(b, slotsFrom(b.length, 100));
    expect(ib.alreadyCached).toBe(2 * ps);
    expect(c.nodeCount).toBe(3);
    c.checkInvariants();
    expect(c.evictableSlots).toBe(ps > 1 ? 5 * ps : 4 + 3);
  });

  test("insert splits when it ends inside a node", () => {
    const c = new RadixCache(2);
    c.insert(range(8), slotsFrom(8, 0));
    const r = c.insert(range(4), slotsFrom(4, 50));
    expect(r.alreadyCached).toBe(4);
    expect(r.handle.length).toBe(4);
    expect(c.nodeCount).toBe(2);
    expect([...c.handleSlots(r.handle)]).toEqual([0, 1, 2, 3]);
    c.checkInvariants();
  });

  test("insert reports already-cached pages and takes only the new part", () => {
    const c = new RadixCache(4);
    c.insert(range(8), slotsFrom(8, 0));
    const r = c.insert(range(14), slotsFrom(14, 100));
    expect(r.alreadyCached).toBe(8);
    expect(r.handle.length).toBe(12);
    expect(sorted(c.ownedSlots())).toEqual([...range(8), ...range(4, 108)]);
    expect(c.insert(range(12), slotsFrom(12, 200)).alreadyCached).toBe(12);
    expect(c.evictableSlots).toBe(12);
  });

  test("lock protects from eviction; evictable/protected accounting", () => {
    const c = new RadixCache(1);
    const a = c.insert([1, 2, 3, 4], slotsFrom(4, 0)).handle;
    c.insert([1, 2, 7, 8, 9], slotsFrom(5, 10)); // splits a after [1, 2]
    const b = c.insert([5, 6], slotsFrom(2, 20)).handle;
    expect([c.evictableSlots, c.protectedSlots]).toEqual([9, 0]);
    c.lock(a);
    expect([c.evictableSlots, c.protectedSlots]).toEqual([5, 4]);
    c.lock(a);
    expect([c.evictableSlots, c.protectedSlots]).toEqual([5, 4]);
    c.checkInvariants();
    const ev = c.evict(1000);
    expect(sorted(ev)).toEqual([12, 13, 14, 20, 21]);
    expect([c.evictableSlots, c.protectedSlots]).toEqual([0, 4]);
    expect(c.isCached(a)).toBe(true);
    expect(c.isCached(b)).toBe(false);
    expect(c.match([1, 2, 3, 4, 0]).length).toBe(4);
    c.unlock(a);
    expect([c.evictableSlots, c.protectedSlots]).toEqual([0, 4]);
    c.unlock(a);
    expect([c.evictableSlots, c.protectedSlots]).toEqual([4, 0]);
    expect(() => c.unlock(a)).toThrow(/not locked/);
    expect(sorted(c.evict(1))).toEqual([2, 3]); // the whole leaf [3, 4]; its parent [1, 2] is next
    expect(c.isCached(a)).toBe(false);
    expect(() => c.lock(a)).toThrow(/not a node/);
    c.checkInvariants();
  });

  test("locking a child protects its ancestors", () => {
    const c = new RadixCache(1);
    c.insert([1, 2, 3, 4], slotsFrom(4, 0));
    const mid = c.match([1, 2, 9]).handle; // splits at 2
    const leaf = c.match([1, 2, 3, 4, 9]).handle;
    c.lock(leaf);
    expect(c.protectedSlots).toBe(4);
    expect(c.evict(100).length).toBe(0);
    c.unlock(leaf);
    c.lock(mid);
    expect(sorted(c.evict(100))).toEqual([2, 3]);
    expect(c.protectedSlots).toBe(2);
    c.unlock(mid);
    c.checkInvariants();
  });

  test("LRU order: least recently matched or inserted leaf goes first", () => {
    const c = new RadixCache(1);
    c.insert([1, 1], slotsFrom(2, 0));
    c.insert([2, 2], slotsFrom(2, 10));
    c.insert([3, 3], slotsFrom(2, 20));
    c.match([1, 1, 0]); // 1 is now the most recent, 2 the oldest
    expect(sorted(c.evict(1))).toEqual([10, 11]);
    c.insert([3, 3, 3, 3], slotsFrom(4, 30)); // touches 3
    expect(sorted(c.evict(1))).toEqual([0, 1]);
    // a parent becomes an evictable leaf once its children are gone, in the same call
    expect(sorted(c.evict(4))).toEqual([20, 21, 32, 33]);
    expect(c.evictableSlots).toBe(0);
    expect(c.evict(1).length).toBe(0);
    c.checkInvariants();
  });

  test("evict stops once enough is released", () => {
    const c = new RadixCache(4);
    for (let i = 0; i < 5; i++) c.insert(range(8, 100 * i), slotsFrom(8, 8 * i));
    expect(c.evict(0).length).toBe(0);
    expect(c.evict(9).length).toBe(16);
    expect(c.evictableSlots).toBe(24);
    expect(sorted(c.evict(1))).toEqual(range(8, 16)); // the third inserted
  });

  test("reset drops everything unless something is locked", () => {
    const c = new RadixCache(2);
    const h = c.insert(range(6), slotsFrom(6, 0)).handle;
    c.insert([9, 9, 9, 9], slotsFrom(4, 10));
    c.lock(h);
    expect(() => c.reset()).toThrow(/locked/);
    expect(c.nodeCount).toBe(2);
    c.unlock(h);
    expect(sorted(c.reset())).toEqual([...range(6), ...range(4, 10)]);
    expect([c.evictableSlots, c.protectedSlots, c.nodeCount]).toEqual([0, 0, 0]);
    expect(c.isCached(h)).toBe(false);
    expect(c.match([0, 1, 2, 3, 4, 5, 6]).length).toBe(0);
    c.checkInvariants();
  });

  test("foreign and root handles", () => {
    const c = new RadixCache(1);
    const other = new RadixCache(1);
    const h = other.insert([1, 2], slotsFrom(2, 0)).handle;
    expect(() => c.lock(h)).toThrow();
    expect(() => c.lock({ length: 0 })).toThrow();
    const root = c.match([1]).handle;
    expect(root.length).toBe(0);
    c.lock(root); // no-op: the root holds nothing
    c.unlock(root);
    expect(c.handleSlots(root).length).toBe(0);
  });
});

describe("NaiveCache and createPrefixCache", () => {
  test("naive caches nothing", () => {
    const c = createPrefixCache("naive", 4);
    expect(c).toBeInstanceOf(NaiveCache);
    const m = c.match(range(20));
    expect([m.length, m.slots.length, m.handle.length]).toEqual([0, 0, 0]);
    c.lock(m.handle);
    const r = c.insert(range(20), slotsFrom(20, 0));
    expect([r.alreadyCached, r.handle.length]).toEqual([0, 0]);
    expect(c.match(range(21)).length).toBe(0);
    expect(c.evict(100).length).toBe(0);
    expect([c.evictableSlots, c.protectedSlots, c.pageSize]).toEqual([0, 0, 4]);
    c.unlock(m.handle);
    expect(c.reset().length).toBe(0);
    expect(() => c.lock({ length: 0 })).toThrow();
  });

  test("radix by name", () => {
    const c = createPrefixCache("radix", 16);
    expect(c).toBeInstanceOf(RadixCache);
    expect(c.pageSize).toBe(16);
    expect(() => createPrefixCache("radix", 0)).toThrow();
  });
});

// ---------------------------------------------------------------------------------------------------------
// a reference model: every cached page-aligned prefix → the slots of its last page, with LRU times

interface ModelPage {
  key: string; // tokens of the whole prefix, joined
  parent: string | null;
  slots: Int32Array; // slots of this page only
  ts: number;
  children: number;
}

class Model {
  readonly pages = new Map<string, ModelPage>();
  private tick = 0;

  constructor(readonly ps: number) {}

  static key(tokens: ArrayLike<number>, len: number): string {
    return Array.prototype.slice.call(tokens, 0, len).join(",");
  }

  match(tokens: ArrayLike<number>): { length: number; slots: number[] } {
    const now = ++this.tick;
    const limit = Math.max(0, tokens.length - 1);
    const slots: number[] = [];
    let k = 0;
    while (k + this.ps <= limit) {
      const p = this.pages.get(Model.key(tokens, k + this.ps));
      if (p === undefined) break;
      p.ts = now;
      slots.push(...p.slots);
      k += this.ps;
    }
    return { length: k, slots };
  }

  insert(tokens: ArrayLike<number>, slots: Int32Array): number {
    const now = ++this.tick;
    const len = tokens.length - (tokens.length % this.ps);
    let already = 0;
    for (let k = this.ps; k <= len; k += this.ps) {
      const key = Model.key(tokens, k);
      let p = this.pages.get(key);
      if (p === undefined) {
        const parent = k === this.ps ? null : Model.key(tokens, k - this.ps);
        p = { key, parent, slots: slots.slice(k - this.ps, k), ts: now, children: 0 };
        this.pages.set(key, p);
        if (parent !== null) this.pages.get(parent)!.children++;
      } else {
        assert(already === k - this.ps, "model: cached prefixes are not prefix-closed");
        already = k;
      }
      p.ts = now;
    }
    return already;
  }

  /** Checks that `released` is what LRU eviction of unlocked leaf pages gives, and applies it. */
  evict(released: Int32Array, want: number, locked: Set<string>): void {
    const R = new Set(released);
    assert(R.size === released.length, "evict released a slot twice");
    assert(released.length % this.ps === 0, "evict released a partial page");
    let removed = 0;
    let crossTs = -1;
    while (removed < released.length) {
      let best: ModelPage[] = [];
      let bestTs = Infinity;
      for (const p of this.pages.values()) {
        if (p.children !== 0 || locked.has(p.key)) continue;
        if (p.ts < bestTs) [best, bestTs] = [[p], p.ts];
        else if (p.ts === bestTs) best.push(p);
      }
      assert(best.length <= 1, "model: two unlocked leaves with the same time");
      const pick = best[0];
      assert(pick !== undefined, "evict released slots but nothing unlocked is cached in the model");
      for (const s of pick.slots) assert(R.has(s), `evict did not take the LRU unlocked leaf page ${pick.key}`);
      assert(removed < want || pick.ts === crossTs, "evict went on past the node that reached the target");
      this.pages.delete(pick.key);
      if (pick.parent !== null) this.pages.get(pick.parent)!.children--;
      removed += this.ps;
      if (removed >= want && crossTs < 0) crossTs = pick.ts;
    }
    if (released.length < want) {
      for (const p of this.pages.values()) assert(locked.has(p.key), "evict stopped short with unlocked pages left");
    }
  }

  allSlots(): number[] {
    const out: number[] = [];
    for (const p of this.pages.values()) out.push(...p.slots);
    return out.sort((a, b) => a - b);
  }
}

// ---------------------------------------------------------------------------------------------------------
// a simulated scheduler: requests hold locks and slots exactly as prefix_cache.ts prescribes

interface Req {
  id: number;
  tokens: number[]; // prompt, then sampled tokens
  prompt: number;
  maxNew: number;
  computed: number; // tokens whose KV is computed
  slots: Int32Array; // slot per token position; [0, cachedLen) are the cache's, the rest the request's
  cachedLen: number;
  handle: CacheHandle;
}

class Sim {
  readonly pool: KvPagePool;
  readonly live: Req[] = [];
  readonly model: Model | null;
  readonly radix: RadixCache | null;
  private nextId = 0;
  ops = 0;
  hits = 0; // admissions that reused a cached prefix

  constructor(
    readonly cache: PrefixCache,
    numPages: number,
    readonly r: Rng,
  ) {
    this.pool = new KvPagePool(numPages, cache.pageSize);
    this.radix = cache instanceof RadixCache ? cache : null;
    this.model = this.radix ? new Model(cache.pageSize) : null;
  }

  get ps(): number {
    return this.cache.pageSize;
  }

  /** Admission: match, lock, then pages for the rest (evicting if short). Returns null if it does not fit. */
  admit(prompt: number[], maxNew: number): Req | null {
    const m = this.cache.match(prompt);
    assert(m.handle.length === m.length && m.slots.length === m.length, "match result is inconsistent");
    if (this.model) {
      const ref = this.model.match(prompt);
      assert(m.length === ref.length, `match length ${m.length}, longest cached aligned prefix ${ref.length}`);
      assert(m.slots.every((s, i) => s === ref.slots[i]), "match slots differ from the model");
    }
    this.cache.lock(m.handle);
    if (m.length > 0) this.hits++;
    const req: Req = {
      id: this.nextId++, tokens: [...prompt], prompt: prompt.length, maxNew, computed: m.length, slots: m.slots, cachedLen: m.length, handle: m.handle,
    };
    this.live.push(req); // live before evicting, so its lock counts
    const pages = Math.ceil((prompt.length + maxNew) / this.ps) - m.length / this.ps;
    let fresh = this.pool.allocate(pages);
    if (fresh === null) {
      this.evict((pages - this.pool.freePages) * this.ps);
      fresh = this.pool.allocate(pages);
    }
    if (fresh === null) {
      this.cache.unlock(m.handle);
      this.live.splice(this.live.indexOf(req), 1);
      return null;
    }
    const slots = new Int32Array(m.length + fresh.length);
    slots.set(m.slots);
    slots.set(fresh, m.length);
    req.slots = slots;
    return req;
  }

  evict(n: number): void {
    const locked = this.lockedKeys();
    const before = this.cache.evictableSlots;
    const released = this.cache.evict(n);
    if (this.model) this.model.evict(released, n, locked);
    assert(this.cache.evictableSlots === before - released.length, "evictable did not drop by what was released");
    if (released.length < n) assert(this.cache.evictableSlots === 0, "evict stopped short with evictable slots left");
    for (const q of this.live) assert(this.radix === null || this.radix.isCached(q.handle), `request ${q.id}'s locked node was evicted`);
    this.pool.free(released);
  }

  /** Insert after a chunk or on finish; frees duplicates and (on finish) the tail. */
  cacheReq(q: Req, finished: boolean): void {
    const toks = q.tokens.slice(0, q.computed);
    const ref = this.model ? this.model.insert(toks, q.slots) : 0;
    const { alreadyCached, handle } = this.cache.insert(toks, q.slots.subarray(0, q.computed));
    if (this.model) assert(alreadyCached === ref, `insert: alreadyCached ${alreadyCached}, model ${ref}`);
    assert(handle.length === (this.radix ? q.computed - (q.computed % this.ps) : 0), "insert handle length");
    assert(alreadyCached >= q.cachedLen || !this.radix, "insert: a locked prefix was not cached");
    this.pool.free(q.slots.slice(q.cachedLen, alreadyCached));
    this.cache.unlock(q.handle);
    if (finished) {
      this.pool.free(q.slots.slice(handle.length));
      this.live.splice(this.live.indexOf(q), 1);
      return;
    }
    this.cache.lock(handle);
    q.slots.set(this.cache.handleSlots(handle));
    q.cachedLen = handle.length;
    q.handle = handle;
  }

  abort(q: Req): void {
    this.pool.free(q.slots.slice(q.cachedLen));
    this.cache.unlock(q.handle);
    this.live.splice(this.live.indexOf(q), 1);
  }

  /** One forward step of q: a prefill chunk of up to `budget` tokens, or one decode step. */
  step(q: Req, budget: number, cacheChunk: boolean): void {
    if (q.computed < q.prompt) {
      q.computed += Math.min(budget, q.prompt - q.computed);
      if (q.computed < q.prompt) {
        if (cacheChunk) this.cacheReq(q, false);
        return;
      }
    } else {
      q.computed = q.tokens.length;
    }
    q.tokens.push(randInt(this.r, 3));
    const done = q.tokens.length - q.prompt >= q.maxNew || this.r() < 0.05; // max tokens or EOS
    if (done) this.cacheReq(q, true);
  }

  /** Checks every invariant of the pool, the cache and the live requests. */
  check(): void {
    this.ops++;
    const total = this.pool.totalSlots;
    const owner = new Int8Array(total);
    const claim = (s: number, who: string): void => {
      assert(s >= 0 && s < total, `${who} holds slot ${s} outside the pool`);
      assert(owner[s] === 0, `slot ${s} is owned twice (second: ${who})`);
      owner[s] = 1;
    };
    for (let p = 0; p < this.pool.numPages; p++) {
      if (this.pool.isFree(p)) for (let j = 0; j < this.ps; j++) claim(p * this.ps + j, "the pool");
    }
    const cached = this.radix ? this.radix.ownedSlots() : new Int32Array(0);
    for (const s of cached) claim(s, "the cache");
    for (const q of this.live) {
      for (let i = q.cachedLen; i < q.slots.length; i++) claim(q.slots[i], `request ${q.id}`);
      assert(q.handle.length === q.cachedLen, `request ${q.id}: handle length`);
      const hs = this.cache.handleSlots(q.handle);
      assert(hs.length === q.cachedLen && hs.every((s, i) => s === q.slots[i]), `request ${q.id}: its prefix slots are not the cache's`);
    }
    for (let s = 0; s < total; s++) assert(owner[s] === 1, `slot ${s} leaked`);
    assert(this.cache.evictableSlots + this.cache.protectedSlots === cached.length, "evictable + protected != cached");
    if (this.radix && this.model) {
      this.radix.checkInvariants();
      const want = this.model.allSlots();
      const got = sorted(cached);
      assert(got.length === want.length && got.every((s, i) => s === want[i]), "cache contents differ from the model");
      assert(this.cache.protectedSlots === this.lockedKeys().size * this.ps, "protected != slots of locked prefixes");
    }
  }

  lockedKeys(): Set<string> {
    const out = new Set<string>();
    for (const q of this.live) for (let k = this.ps; k <= q.cachedLen; k += this.ps) out.add(Model.key(q.tokens, k));
    return out;
  }

  /** Finishes every live request and checks the end state: every slot free or the cache's, no lock held. */
  drain(): void {
    while (this.live.length > 0) {
      this.cacheReq(this.live[0], true);
      this.check();
    }
    assert(this.cache.protectedSlots === 0, "a lock is still held");
    const cached = this.cache.evictableSlots;
    assert(this.pool.freeSlots + cached === this.pool.totalSlots, "slots neither free nor cached after all requests ended");
    this.pool.free(this.cache.reset());
    this.model?.pages.clear();
    assert(this.pool.freeSlots === this.pool.totalSlots, "reset did not return everything");
    this.check();
  }
}

/** Random prompts that often share prefixes with earlier ones (cut anywhere, not only at page bounds). */
function makePrompt(r: Rng, corpus: number[][], ps: number, maxLen: number): number[] {
  let p: number[] = [];
  if (corpus.length > 0 && r() < 0.7) {
    const src = corpus[randInt(r, corpus.length)];
    p = src.slice(0, randInt(r, src.length + 1));
  }
  const extra = randInt(r, 3 * ps + 2);
  for (let i = 0; i < extra; i++) p.push(randInt(r, r() < 0.5 ? 2 : 4));
  if (p.length === 0) p.push(randInt(r, 2));
  return p.slice(0, maxLen);
}

// ---------------------------------------------------------------------------------------------------------
// property tests

describe("RadixCache against the reference model", () => {
  for (const ps of [1, 4, 16]) {
    test(`random match/lock/insert/evict sequences (page size ${ps})`, () => {
      for (let seed = 1; seed <= 12; seed++) {
        const r = rng(seed * 7919 + ps);
        const sim = new Sim(new RadixCache(ps), 28, r);
        const maxLen = 5 * ps + 3;
        const corpus: number[][] = [];
        for (let op = 0; op < 400; op++) {
          const x = r();
          if (x < 0.25 && sim.live.length < 6) {
            const prompt = makePrompt(r, corpus, ps, maxLen);
            corpus.push(prompt);
            sim.admit(prompt, 1 + randInt(r, 2 * ps));
          } else if (x < 0.7 && sim.live.length > 0) {
            const q = sim.live[randInt(r, sim.live.length)];
            sim.step(q, 1 + randInt(r, 2 * ps + 1), r() < 0.7);
            if (q.tokens.length > q.prompt) corpus.push(q.tokens.slice());
          } else if (x < 0.78 && sim.live.length > 0) {
            sim.abort(sim.live[randInt(r, sim.live.length)]);
          } else if (x < 0.86) {
            sim.evict(randInt(r, 6 * ps));
          } else {
            // a bare match (no lock), as a probe
            const probe = makePrompt(r, corpus, ps, maxLen);
            const m = sim.cache.match(probe);
            const ref = sim.model!.match(probe);
            assert(m.length === ref.length && m.slots.every((s, i) => s === ref.slots[i]), "probe match differs from the model");
          }
          sim.check();
        }
        sim.drain();
        expect(sim.ops).toBeGreaterThan(400);
      }
    });
  }
});

describe("scheduler flow", () => {
  // Prefill-first with a token budget and chunking, decode otherwise; admission reserves prompt + max tokens.
  function run(kind: "radix" | "naive", ps: number, seed: number): Sim {
    const r = rng(seed);
    const sim = new Sim(createPrefixCache(kind, ps), 24, r);
    const systemPrompts = [0, 1, 2].map(() => range(2 * ps + 3).map(() => randInt(r, 3)));
    const waiting: { prompt: number[]; maxNew: number }[] = [];
    for (let i = 0; i < 40; i++) {
      const sys = systemPrompts[randInt(r, 3)];
      const user = range(1 + randInt(r, 2 * ps)).map(() => randInt(r, 3));
      waiting.push({ prompt: [...sys.slice(0, sys.length - randInt(r, 3)), ...user], maxNew: 1 + randInt(r, ps + 2) });
    }
    const budget = 3 * ps; // max prefill tokens per step, so long prompts are chunked
    let steps = 0;
    let admitted = 0;
    while (waiting.length > 0 || sim.live.length > 0) {
      assert(++steps < 10000, "the scheduler made no progress");
      while (waiting.length > 0 && sim.live.length < 4) {
        if (sim.admit(waiting[0].prompt, waiting[0].maxNew) === null) break;
        waiting.shift();
        admitted++;
        sim.check();
      }
      const prefilling = sim.live.filter((q) => q.computed < q.prompt);
      if (prefilling.length > 0) {
        let left = budget;
        for (const q of prefilling) {
          if (left === 0) break;
          const take = Math.min(left, q.prompt - q.computed);
          left -= take;
          sim.step(q, take, true);
          sim.check();
        }
      } else {
        for (const q of [...sim.live]) {
          sim.step(q, 0, false);
          sim.check();
        }
      }
    }
    expect(admitted).toBe(40);
    assert(sim.cache.protectedSlots === 0, "a lock is still held");
    assert(sim.pool.freeSlots + sim.cache.evictableSlots === sim.pool.totalSlots, "slots neither free nor cached at the end");
    return sim;
  }

  for (const ps of [1, 4, 16]) {
    test(`radix, page size ${ps}: everything ends free or cached, with reuse`, () => {
      for (let seed = 1; seed <= 6; seed++) {
        const sim = run("radix", ps, seed * 31 + ps);
        expect(sim.hits).toBeGreaterThan(0);
        expect(sim.cache.evictableSlots).toBeGreaterThan(0);
        sim.drain();
      }
    });
    test(`naive, page size ${ps}: everything ends free`, () => {
      for (let seed = 1; seed <= 3; seed++) {
        const sim = run("naive", ps, seed * 31 + ps);
        expect(sim.hits).toBe(0);
        expect(sim.pool.freeSlots).toBe(sim.pool.totalSlots);
      }
    });
  }

  test("prefix reuse actually happens under the radix cache", () => {
    const sim = new Sim(new RadixCache(4), 64, rng(5));
    const sys = range(20, 100);
    const a = sim.admit([...sys, 1, 2], 2)!;
    while (sim.live.includes(a)) sim.step(a, 100, true);
    sim.check();
    const b = sim.admit([...sys, 3], 2)!;
    expect(b.cachedLen).toBe(20);
    expect(b.computed).toBe(20);
    sim.abort(b);
    sim.drain();
  });
});
