// Radix tree of token sequences → KV slot indices. Every edge key is a whole number of pages, so every node
// boundary (and every match, insert and split point) is page aligned.
import type { CacheHandle, MatchResult, PrefixCache } from "./prefix_cache.ts";

type ChildKey = number | string;

const EMPTY = new Int32Array(0);

class RadixNode implements CacheHandle {
  readonly children = new Map<ChildKey, RadixNode>();
  refCount = 0;

  constructor(
    public parent: RadixNode | null, // null for the root and for nodes no longer in the tree
    public key: Int32Array, // token ids of this edge
    public value: Int32Array, // their slots
    readonly length: number, // tokens from the root to the end of this node
    public timestamp: number,
    readonly id: number, // tie-break, so eviction order is deterministic
  ) {}
}

function older(a: RadixNode, b: RadixNode): boolean {
  return a.timestamp < b.timestamp || (a.timestamp === b.timestamp && a.id < b.id);
}

/** Binary min-heap of nodes by (timestamp, id). */
class LruHeap {
  private readonly items: RadixNode[] = [];

  get size(): number {
    return this.items.length;
  }

  push(node: RadixNode): void {
    const a = this.items;
    let i = a.length;
    a.push(node);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!older(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): RadixNode | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && older(a[l], a[m])) m = l;
        if (r < a.length && older(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

function concat(parts: Int32Array[], total: number): Int32Array {
  const out = new Int32Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export class RadixCache implements PrefixCache {
  readonly pageSize: number;
  private readonly root: RadixNode;
  private clock = 0; // LRU time: a counter bumped on every match and insert
  private nextId = 1;
  private evictable = 0;
  private protected_ = 0;

  constructor(pageSize: number) {
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new Error(`RadixCache: bad pageSize ${pageSize}`);
    this.pageSize = pageSize;
    this.root = new RadixNode(null, EMPTY, EMPTY, 0, 0, 0);
  }

  get evictableSlots(): number {
    return this.evictable;
  }

  get protectedSlots(): number {
    return this.protected_;
  }

  match(tokens: ArrayLike<number>): MatchResult {
    const limit = this.alignDown(tokens.length - 1);
    const parts: Int32Array[] = [];
    let node = this.root;
    let pos = 0;
    while (pos < limit) {
      const child = node.children.get(this.childKey(tokens, pos));
      if (child === undefined) break;
      const common = this.commonPrefix(child.key, tokens, pos, limit);
      node = common < child.key.length ? this.split(child, common) : child;
      parts.push(node.value);
      pos += common;
      if (node !== child) break;
    }
    this.touch(node);
    return { handle: node, length: pos, slots: concat(parts, pos) };
  }

  lock(handle: CacheHandle): void {
    for (let n = this.own(handle); n !== this.root; n = n.parent!) {
      if (n.refCount++ === 0) {
        this.evictable -= n.key.length;
        this.protected_ += n.key.length;
      }
    }
  }

  unlock(handle: CacheHandle): void {
    const node = this.own(handle);
    if (node !== this.root && node.refCount === 0) throw new Error("RadixCache.unlock: handle is not locked");
    for (let n = node; n !== this.root; n = n.parent!) {
      if (--n.refCount === 0) {
        this.protected_ -= n.key.length;
        this.evictable += n.key.length;
      }
    }
  }

  insert(tokens: ArrayLike<number>, slots: Int32Array): { alreadyCached: number; handle: CacheHandle } {
    const len = this.alignDown(tokens.length);
    if (slots.length < len) throw new Error(`RadixCache.insert: ${slots.length} slots for ${len} tokens`);
    let node = this.root;
    let pos = 0;
    while (pos < len) {
      const child = node.children.get(this.childKey(tokens, pos));
      if (child === undefined) break;
      const common = this.commonPrefix(child.key, tokens, pos, len);
      pos += common;
      if (common < child.key.length) {
        node = this.split(child, common);
        break;
      }
      node = child;
    }
    const alreadyCached = pos;
    if (pos < len) {
      const key = new Int32Array(len - pos);
      for (let i = 0; i < key.length; i++) key[i] = tokens[pos + i];
      const leaf = new RadixNode(node, key, slots.slice(pos, len), len, 0, this.nextId++);
      node.children.set(this.childKey(key, 0), leaf);
      this.evictable += key.length;
      node = leaf;
    }
    this.touch(node);
    return { alreadyCached, handle: node };
  }

  handleSlots(handle: CacheHandle): Int32Array {
    const parts: Int32Array[] = [];
    for (let n = this.own(handle); n !== this.root; n = n.parent!) parts.push(n.value);
    return concat(parts.reverse(), handle.length);
  }

  evict(slots: number): Int32Array {
    if (slots <= 0) return EMPTY;
    const heap = new LruHeap();
    this.forEachNode((n) => {
      if (n.children.size === 0 && n.refCount === 0) heap.push(n);
    });
    const parts: Int32Array[] = [];
    let released = 0;
    while (released < slots && heap.size > 0) {
      const leaf = heap.pop()!;
      const parent = leaf.parent!;
      parent.children.delete(this.childKey(leaf.key, 0));
      leaf.parent = null;
      this.evictable -= leaf.key.length;
      released += leaf.value.length;
      parts.push(leaf.value);
      if (parent !== this.root && parent.children.size === 0 && parent.refCount === 0) heap.push(parent);
    }
    return concat(parts, released);
  }

  reset(): Int32Array {
    if (this.protected_ > 0) throw new Error(`RadixCache.reset: ${this.protected_} slots are still locked`);
    const parts: Int32Array[] = [];
    this.forEachNode((n) => {
      parts.push(n.value);
      n.parent = null;
    });
    this.root.children.clear();
    const released = this.evictable;
    this.evictable = 0;
    return concat(parts, released);
  }

  // ---- inspection, for tests and debugging ----

  /** Whether `handle` is still a node of this tree (evicted and reset nodes are not). */
  isCached(handle: CacheHandle): boolean {
    if (!(handle instanceof RadixNode)) return false;
    let n: RadixNode = handle;
    while (n.parent !== null) n = n.parent;
    return n === this.root;
  }

  /** Every slot owned by the tree, in no particular order. */
  ownedSlots(): Int32Array {
    const parts: Int32Array[] = [];
    this.forEachNode((n) => parts.push(n.value));
    return concat(parts, this.evictable + this.protected_);
  }

  get nodeCount(): number {
    let count = 0;
    this.forEachNode(() => count++);
    return count;
  }

  /** Throws if the tree's structure or its size counters are inconsistent. */
  checkInvariants(): void {
    const ps = this.pageSize;
    let evictable = 0;
    let protected_ = 0;
    const visit = (node: RadixNode): void => {
      let childRefs = 0;
      for (const [k, child] of node.children) {
        const where = `node ${child.id} (length ${child.length})`;
        if (child.parent !== node) throw new Error(`${where}: wrong parent`);
        if (child.key.length === 0 || child.key.length % ps !== 0) throw new Error(`${where}: key length ${child.key.length}`);
        if (child.value.length !== child.key.length) throw new Error(`${where}: value length ${child.value.length}`);
        if (this.childKey(child.key, 0) !== k) throw new Error(`${where}: filed under ${k}`);
        if (child.length !== node.length + child.key.length) throw new Error(`${where}: length mismatch`);
        if (child.refCount < 0) throw new Error(`${where}: negative ref count`);
        if (child.timestamp > node.timestamp) throw new Error(`${where}: newer than its parent`);
        if (child.refCount > 0) protected_ += child.key.length;
        else evictable += child.key.length;
        childRefs += child.refCount;
        visit(child);
      }
      if (node !== this.root && childRefs > node.refCount) throw new Error(`node ${node.id}: children hold more locks than it`);
    };
    visit(this.root);
    if (evictable !== this.evictable || protected_ !== this.protected_) {
      throw new Error(`size counters ${this.evictable}/${this.protected_}, tree has ${evictable}/${protected_}`);
    }
  }

  // ---- internals ----

  private alignDown(n: number): number {
    return n <= 0 ? 0 : n - (n % this.pageSize);
  }

  /** Children are keyed by their first page: the token itself at page size 1, else the page's ids joined. */
  private childKey(tokens: ArrayLike<number>, pos: number): ChildKey {
    if (this.pageSize === 1) return tokens[pos];
    let s = String(tokens[pos]);
    for (let i = 1; i < this.pageSize; i++) s += "," + tokens[pos + i];
    return s;
  }

  /** Page-aligned length of the common prefix of key and tokens[pos : end]. */
  private commonPrefix(key: Int32Array, tokens: ArrayLike<number>, pos: number, end: number): number {
    const n = Math.min(key.length, end - pos);
    let i = 0;
    while (i < n && key[i] === tokens[pos + i]) i++;
    return this.alignDown(i);
  }

  /** Splits `node` after `at` tokens of its key; returns the new upper node, which inherits its locks. */
  private split(node: RadixNode, at: number): RadixNode {
    const parent = node.parent!;
    const upper = new RadixNode(
      parent, node.key.subarray(0, at), node.value.subarray(0, at), node.length - node.key.length + at, node.timestamp, this.nextId++,
    );
    upper.refCount = node.refCount;
    parent.children.set(this.childKey(upper.key, 0), upper);
    node.key = node.key.subarray(at);
    node.value = node.value.subarray(at);
    node.parent = upper;
    upper.children.set(this.childKey(node.key, 0), node);
    return upper;
  }

  private touch(node: RadixNode): void {
    const now = ++this.clock;
    for (let n: RadixNode | null = node; n !== null; n = n.parent) n.timestamp = now;
  }

  private own(handle: CacheHandle): RadixNode {
    if (!this.isCached(handle)) throw new Error("RadixCache: handle is not a node of this cache (evicted, reset or foreign)");
    return handle as RadixNode;
  }

  private forEachNode(fn: (node: RadixNode) => void): void {
    const stack: RadixNode[] = [...this.root.children.values()];
    while (stack.length > 0) {
      const n = stack.pop()!;
      fn(n);
      for (const c of n.children.values()) stack.push(c);
    }
  }
}
