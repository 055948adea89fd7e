import { describe, expect, test } from "bun:test";
import { KvPagePool } from "../src/cache/page_pool.ts";
import { rng } from "./helpers/rng.ts";


function pagesOf(pool: KvPagePool, slots: Int32Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < slots.length; i += pool.pageSize) out.push(slots[i] / pool.pageSize);
  return out;
}

describe("KvPagePool", () => {
  test("sizes and getters", () => {
    const pool = new KvPagePool(10, 4);
    expect([pool.numPages, pool.pageSize, pool.totalSlots, pool.freePages, pool.freeSlots, pool.usedSlots]).toEqual([10, 4, 40, 10, 40, 0]);
    const a = pool.allocate(3)!;
    expect([pool.freePages, pool.freeSlots, pool.usedSlots]).toEqual([7, 28, 12]);
    pool.free(a);
    expect([pool.freePages, pool.freeSlots, pool.usedSlots]).toEqual([10, 40, 0]);
  });

  test.each([1, 4, 16])("allocate returns whole consecutive pages (page size %d)", (ps) => {
    const pool = new KvPagePool(8, ps);
    const a = pool.allocate(3)!;
    expect(a.length).toBe(3 * ps);
    for (let i = 0; i < a.length; i += ps) {
      expect(a[i] % ps).toBe(0);
      for (let j = 0; j < ps; j++) expect(a[i + j]).toBe(a[i] + j);
      expect(pool.isFree(a[i] / ps)).toBe(false);
    }
    expect(new Set(pagesOf(pool, a)).size).toBe(3);
    expect(pool.allocate(0)!.length).toBe(0);
  });

  test("a fresh pool hands out pages in order", () => {
    const pool = new KvPagePool(4, 2);
    expect([...pool.allocate(2)!]).toEqual([0, 1, 2, 3]);
  });

  test("exhaustion returns null without side effects", () => {
    const pool = new KvPagePool(5, 4);
    const a = pool.allocate(3)!;
    expect(pool.allocate(3)).toBeNull();
    expect(pool.freePages).toBe(2);
    for (let p = 0; p < 5; p++) expect(pool.isFree(p)).toBe(!pagesOf(pool, a).includes(p));
    const b = pool.allocate(2)!;
    expect(pool.allocate(1)).toBeNull();
    expect(pool.freePages).toBe(0);
    pool.free(a);
    pool.free(b);
    expect(pool.freePages).toBe(5);
  });

  test("double free is detected and frees nothing", () => {
    const pool = new KvPagePool(4, 4);
    const a = pool.allocate(2)!;
    pool.free(a.slice(0, 4));
    expect(() => pool.free(a)).toThrow(/double free/);
    expect(pool.freePages).toBe(3);
    expect(pool.isFree(a[4] / 4)).toBe(false);
    // the same page twice in one call
    const b = pool.allocate(1)!;
    const twice = new Int32Array([...b, ...b]);
    expect(() => pool.free(twice)).toThrow(/double free/);
    expect(pool.isFree(b[0] / 4)).toBe(false);
    expect(pool.freePages).toBe(2);
  });

  test("malformed runs are rejected", () => {
    const pool = new KvPagePool(4, 4);
    const a = pool.allocate(2)!;
    expect(() => pool.free(a.slice(0, 3))).toThrow(/whole number of pages/);
    expect(() => pool.free(a.slice(1, 5))).toThrow(/page boundary/);
    const shuffled = a.slice(0, 4);
    [shuffled[1], shuffled[2]] = [shuffled[2], shuffled[1]];
    expect(() => pool.free(shuffled)).toThrow(/not consecutive/);
    expect(() => pool.free(new Int32Array([16, 17, 18, 19]))).toThrow(/outside the pool/);
    expect(() => pool.free(new Int32Array([-4, -3, -2, -1]))).toThrow(/outside the pool/);
    expect(pool.freePages).toBe(2);
    pool.free(a);
    expect(pool.freePages).toBe(4);
  });

  test("bad arguments", () => {
    expect(() => new KvPagePool(4, 0)).toThrow();
    expect(() => new KvPagePool(-1, 4)).toThrow();
    expect(() => new KvPagePool(2.5, 4)).toThrow();
    const pool = new KvPagePool(4, 4);
    expect(() => pool.allocate(-1)).toThrow();
    expect(() => pool.isFree(4)).toThrow();
  });

  test.each([1, 4, 16])("random allocate/free keeps the free set exact (page size %d)", (ps) => {
    const next = rng(1234 + ps);
    const numPages = 37;
    const pool = new KvPagePool(numPages, ps);
    const held: Int32Array[] = [];
    const owned = new Set<number>();
    for (let step = 0; step < 3000; step++) {
      if (next() < 0.55) {
        const n = Math.floor(next() * 6);
        const before = pool.freePages;
        const a = pool.allocate(n);
        if (n > before) {
          expect(a).toBeNull();
          expect(pool.freePages).toBe(before);
        } else {
          expect(a).not.toBeNull();
          for (const p of pagesOf(pool, a!)) {
            expect(owned.has(p)).toBe(false);
            owned.add(p);
          }
          held.push(a!);
        }
      } else if (held.length > 0) {
        const i = Math.floor(next() * held.length);
        const a = held[i];
        held.splice(i, 1);
        // free a random sub-run of whole pages, keep the rest
        const cut = Math.floor(next() * (a.length / ps + 1)) * ps;
        pool.free(a.subarray(0, cut));
        for (const p of pagesOf(pool, a.subarray(0, cut))) owned.delete(p);
        if (cut < a.length) held.push(a.slice(cut));
      }
      expect(pool.freePages).toBe(numPages - owned.size);
      for (let p = 0; p < numPages; p++) expect(pool.isFree(p)).toBe(!owned.has(p));
    }
  });
});
