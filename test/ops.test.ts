// Every CPU op against a plain TypeScript float64 reference on random inputs.
import { describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu.ts";
import { randomBf16, readBf16, upload, worstError } from "./helpers/device_tensors.ts";
import { rng } from "./helpers/rng.ts";

const be = new CpuBackend();
const ops = be.ops;
// bf16 outputs carry 8 significant bits: relative error up to 2^-8 from the final rounding alone.
const BF16 = { atol: 1e-2, rtol: 1.6e-2 };

describe("norms", () => {
  const rows = 5, dim = 96, eps = 1e-6;
  const rms = (x: Float32Array, r: number, w: Float32Array, out: number[]) => {
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(s / dim + eps);
    for (let i = 0; i < dim; i++) out.push(x[r * dim + i] * inv * w[i]);
  };

  test("rmsnorm", () => {
    const x = randomBf16(be, rows * dim, 1, 3), w = randomBf16(be, dim, 2, 0.5, 1);
    const out = be.alloc(rows * dim * 2);
    ops.rmsnorm(out, x.ptr, w.ptr, rows, dim, eps);
    const expected: number[] = [];
    for (let r = 0; r < rows; r++) rms(x.host, r, w.host, expected);
    expect(worstError(readBf16(be, out, rows * dim), expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
  });

  test("add_rmsnorm updates the residual and normalizes the sum", () => {
    const x = randomBf16(be, rows * dim, 3), res = randomBf16(be, rows * dim, 4), w = randomBf16(be, dim, 5, 0.5, 1);
    const out = be.alloc(rows * dim * 2);
    ops.addRmsnorm(out, res.ptr, x.ptr, w.ptr, rows, dim, eps);
    const sum = Float32Array.from(x.host, (v, i) => v + res.host[i]);
    expect(worstError(readBf16(be, res.ptr, rows * dim), sum, 1e-6, 4e-3)).toBeLessThan(1);
    const expected: number[] = [];
    for (let r = 0; r < rows; r++) rms(sum, r, w.host, expected);
    expect(worstError(readBf16(be, out, rows * dim), expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
  });

  test("head_rmsnorm normalizes each head of a strided section in place", () => {
    const tokens = 3, heads = 2, hd = 16, stride = 80; // the section sits inside wider rows
    const x = randomBf16(be, tokens * stride, 6, 2), w = randomBf16(be, hd, 7, 0.5, 1);
    ops.headRmsnorm(x.ptr, w.ptr, tokens, heads, hd, stride, eps);
    const got = readBf16(be, x.ptr, tokens * stride);
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const base = t * stride + h * hd;
        let s = 0;
        for (let i = 0; i < hd; i++) s += x.host[base + i] ** 2;
        const inv = 1 / Math.sqrt(s / hd + eps);
        const expected = Array.from({ length: hd }, (_, i) => x.host[base + i] * inv * w.host[i]);
        expect(worstError(got.subarray(base, base + hd), expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
      }
      // untouched beyond the heads
      expect(Array.from(got.subarray(t * stride + heads * hd, (t + 1) * stride))).toEqual(
        Array.from(x.host.subarray(t * stride + heads * hd, (t + 1) * stride)));
    }
  });
});

test("rope rotates the halves of the first rotary_dim dims (neox), q and k strided", () => {
  const tokens = 4, qh = 4, kh = 2, hd = 32, rot = 16, stride = (qh + 2 * kh) * hd, maxPos = 64;
  const qkv = randomBf16(be, tokens * stride, 8);
  const positions = Int32Array.of(0, 5, 17, 63);
  const cs = new Float32Array(maxPos * rot);
  for (let p = 0; p < maxPos; p++) for (let i = 0; i < rot / 2; i++) {
    const a = p * 10000 ** (-2 * i / rot);
    cs[p * rot + i] = Math.cos(a);
    cs[p * rot + rot / 2 + i] = Math.sin(a);
  }
  ops.rope(qkv.ptr, qkv.ptr + qh * hd * 2, upload(be, positions), upload(be, cs), tokens, qh, kh, hd, rot, stride, stride);
  const got = readBf16(be, qkv.ptr, tokens * stride);
  const expected = Float32Array.from(qkv.host);
  for (let t = 0; t < tokens; t++) for (let h = 0; h < qh + kh; h++) {
    const base = t * stride + h * hd;
    for (let i = 0; i < rot / 2; i++) {
      const c = cs[positions[t] * rot + i], s = cs[positions[t] * rot + rot / 2 + i];
      const a = qkv.host[base + i], b = qkv.host[base + i + rot / 2];
      expected[base + i] = a * c - b * s;
      expected[base + i + rot / 2] = b * c + a * s;
    }
  }
  expect(worstError(got, expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
});

describe("gemm", () => {
  for (const [m, n, k, bias, f32] of [[1, 37, 64, false, false], [19, 24, 96, true, false], [7, 50, 33, true, true]] as const) {
    test(`[${m}×${k}]·[${n}×${k}]ᵀ bias=${bias} f32 out=${f32}, strided x`, () => {
      const xStride = k + 5;
      const x = randomBf16(be, m * xStride, 10 + m), w = randomBf16(be, n * k, 11 + n), b = randomBf16(be, n, 12);
      const y = be.alloc(m * n * 4);
      ops.gemm(y, x.ptr, w.ptr, bias ? b.ptr : 0, m, n, k, xStride, f32);
      const expected: number[] = [];
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let s = bias ? b.host[j] : 0;
        for (let l = 0; l < k; l++) s += x.host[i * xStride + l] * w.host[j * k + l];
        expected.push(s);
      }
      let got: Float32Array;
      if (f32) {
        got = new Float32Array(m * n);
        be.download(got, y);
      } else got = readBf16(be, y, m * n);
      expect(worstError(got, expected, f32 ? 1e-4 : BF16.atol, f32 ? 1e-5 : BF16.rtol)).toBeLessThan(1);
    });
  }
});

test("silu_mul", () => {
  const rows = 3, inter = 40;
  const gu = randomBf16(be, rows * 2 * inter, 13, 4);
  const out = be.alloc(rows * inter * 2);
  ops.siluMul(out, gu.ptr, rows, inter);
  const expected: number[] = [];
  for (let r = 0; r < rows; r++) for (let i = 0; i < inter; i++) {
    const g = gu.host[r * 2 * inter + i], u = gu.host[r * 2 * inter + inter + i];
    expected.push((g / (1 + Math.exp(-g))) * u);
  }
  expect(worstError(readBf16(be, out, rows * inter), expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
});

test("gemm_silu_mul is gemm then silu_mul, bit for bit (1 to 3 rows, strided x)", () => {
  for (const [m, inter, k] of [[1, 40, 64], [2, 13, 96], [3, 24, 33]] as const) {
    const xStride = k + 3;
    const x = randomBf16(be, m * xStride, 20 + m), w = randomBf16(be, 2 * inter * k, 21 + m);
    const gateUp = be.alloc(m * 2 * inter * 2), separate = be.alloc(m * inter * 2), fused = be.alloc(m * inter * 2);
    ops.gemm(gateUp, x.ptr, w.ptr, 0, m, 2 * inter, k, xStride, false);
    ops.siluMul(separate, gateUp, m, inter);
    ops.gemmSiluMul(fused, x.ptr, w.ptr, m, inter, k, xStride);
    const a = new Uint16Array(m * inter), b = new Uint16Array(m * inter);
    be.download(a, separate);
    be.download(b, fused);
    expect({ m, inter, k, same: b.every((v, i) => v === a[i]) }).toEqual({ m, inter, k, same: true });
  }
  expect(() => ops.gemmSiluMul(0, 0, 0, 1, 0, 8, 8)).toThrow("gemm_silu_mul: bad shape");
});

test("embedding gathers rows and zeroes ids outside this rank's vocabulary slice", () => {
  const vocab = 10, hidden = 8, start = 20;
  const table = randomBf16(be, vocab * hidden, 14);
  const ids = Int32Array.of(20, 29, 19, 30, 25);
  const out = be.alloc(ids.length * hidden * 2);
  ops.embedding(out, table.ptr, upload(be, ids), ids.length, hidden, start, vocab);
  const got = readBf16(be, out, ids.length * hidden);
  ids.forEach((id, t) => {
    const local = id - start;
    const row = Array.from(got.subarray(t * hidden, (t + 1) * hidden));
    const want = local >= 0 && local < vocab ? Array.from(table.host.subarray(local * hidden, (local + 1) * hidden)) : new Array(hidden).fill(0);
    expect(row).toEqual(want);
  });
});

test("store_kv, gather_rows and argmax", () => {
  const kvDim = 8, stride = 24, tokens = 3;
  const kc = be.alloc(16 * kvDim * 2), vc = be.alloc(16 * kvDim * 2);
  const src = randomBf16(be, tokens * stride, 15);
  const slots = Int32Array.of(9, 2, 14);
  ops.storeKv(kc, vc, src.ptr, src.ptr + kvDim * 2, upload(be, slots), tokens, kvDim, stride, stride);
  const k = readBf16(be, kc, 16 * kvDim), v = readBf16(be, vc, 16 * kvDim);
  slots.forEach((s, t) => {
    expect(Array.from(k.subarray(s * kvDim, (s + 1) * kvDim))).toEqual(Array.from(src.host.subarray(t * stride, t * stride + kvDim)));
    expect(Array.from(v.subarray(s * kvDim, (s + 1) * kvDim))).toEqual(Array.from(src.host.subarray(t * stride + kvDim, t * stride + 2 * kvDim)));
  });
  const gathered = be.alloc(2 * kvDim * 2);
  ops.gatherRows(gathered, kc, upload(be, Int32Array.of(14, 9)), 2, kvDim);
  expect(Array.from(readBf16(be, gathered, 2 * kvDim))).toEqual([...k.subarray(14 * kvDim, 15 * kvDim), ...k.subarray(9 * kvDim, 10 * kvDim)]);
  const logits = upload(be, Float32Array.of(1, 5, 5, 2, -3, 4, -2, 4));
  const out = be.alloc(8);
  ops.argmax(out, logits, 2, 4);
  const idx = new Int32Array(2);
  be.download(idx, out);
  expect(Array.from(idx)).toEqual([1, 1]); // lowest index on ties
});

test("fill_random is deterministic with the requested mean and spread", () => {
  const n = 100_000, a = be.alloc(n * 2), b = be.alloc(n * 2);
  ops.fillRandom(a, n, 7, 0.5, 0.02);
  ops.fillRandom(b, n, 7, 0.5, 0.02);
  const x = readBf16(be, a, n);
  expect(Array.from(readBf16(be, b, n))).toEqual(Array.from(x));
  const mean = x.reduce((s, v) => s + v, 0) / n;
  const std = Math.sqrt(x.reduce((s, v) => s + (v - mean) ** 2, 0) / n);
  expect(Math.abs(mean - 0.5)).toBeLessThan(1e-3);
  expect(Math.abs(std - 0.02) / 0.02).toBeLessThan(0.05);
});

describe("attention over slot-indexed KV", () => {
  const qh = 8, kvh = 2, hd = 16, slotsTotal = 256, pageStride = 64;
  const kvDim = kvh * hd;
  // Three requests: fresh prefill, extend over a cached prefix, and a single new token over a long prefix.
  const newTokens = [5, 3, 1], kvLens = [5, 20, 40], rowsOf = [2, 0, 1];
  const r = rng(99);
  const perm = Array.from({ length: slotsTotal }, (_, i) => i).sort(() => r() - 0.5); // scattered slots
  const pageTable = new Int32Array(3 * pageStride);
  let next = 0;
  kvLens.forEach((len, b) => {
    for (let j = 0; j < len; j++) pageTable[rowsOf[b] * pageStride + j] = perm[next++];
  });
  const k = randomBf16(be, slotsTotal * kvDim, 20), v = randomBf16(be, slotsTotal * kvDim, 21);
  const tokens = newTokens.reduce((a, b) => a + b, 0);
  const qStride = (qh + 2 * kvh) * hd;
  const q = randomBf16(be, tokens * qStride, 22, 2);
  const indptr = Int32Array.from([0, 5, 8, 9]);
  const scale = 1 / Math.sqrt(hd);

  function reference(): number[] {
    const out: number[] = [];
    newTokens.forEach((n, b) => {
      for (let i = 0; i < n; i++) {
        const t = indptr[b] + i, visible = kvLens[b] - n + i + 1;
        for (let h = 0; h < qh; h++) {
          const g = Math.floor(h / (qh / kvh));
          const scores: number[] = [];
          for (let j = 0; j < visible; j++) {
            const slot = pageTable[rowsOf[b] * pageStride + j];
            let s = 0;
            for (let d = 0; d < hd; d++) s += q.host[t * qStride + h * hd + d] * k.host[slot * kvDim + g * hd + d];
            scores.push(s * scale);
          }
          const m = Math.max(...scores);
          const p = scores.map((s) => Math.exp(s - m));
          const z = p.reduce((a, c) => a + c, 0);
          for (let d = 0; d < hd; d++) {
            let acc = 0;
            for (let j = 0; j < visible; j++) acc += p[j] * v.host[pageTable[rowsOf[b] * pageStride + j] * kvDim + g * hd + d];
            out.push(acc / z);
          }
        }
      }
    });
    return out;
  }

  test("prefill/extend: causal, bottom-right aligned over the cached prefix, GQA", () => {
    const out = be.alloc(tokens * qh * hd * 2);
    ops.attentionPrefill(out, q.ptr, k.ptr, v.ptr, upload(be, pageTable), pageStride, upload(be, Int32Array.from(rowsOf)),
      upload(be, indptr), upload(be, Int32Array.from(kvLens)), 3, tokens, qh, kvh, hd, qStride, scale);
    expect(worstError(readBf16(be, out, tokens * qh * hd), reference(), BF16.atol, BF16.rtol)).toBeLessThan(1);
    expect(() => ops.attentionPrefill(out, q.ptr, k.ptr, v.ptr, upload(be, pageTable), pageStride, upload(be, Int32Array.from(rowsOf)),
      upload(be, indptr), upload(be, Int32Array.from(kvLens)), 3, tokens + 1, qh, kvh, hd, qStride, scale)).toThrow(/tokens must equal qo_indptr/);
  });

  test("decode equals the prefill kernel on one token per request", () => {
    // Use the last query token of each request against its full KV.
    const lastTokens = [4, 7, 8];
    const qDecode = be.alloc(3 * qStride * 2);
    lastTokens.forEach((t, b) => be.copy(qDecode + b * qStride * 2, q.ptr + t * qStride * 2, qStride * 2));
    const out = be.alloc(3 * qh * hd * 2);
    ops.attentionDecode(out, qDecode, k.ptr, v.ptr, upload(be, pageTable), pageStride, upload(be, Int32Array.from(rowsOf)),
      upload(be, Int32Array.from(kvLens)), 3, qh, kvh, hd, qStride, scale, 0, 0);
    const ref = reference();
    const expected = lastTokens.flatMap((t) => ref.slice(t * qh * hd, (t + 1) * qh * hd));
    expect(worstError(readBf16(be, out, 3 * qh * hd), expected, BF16.atol, BF16.rtol)).toBeLessThan(1);
  });

  test("bad shapes are refused with the op's message", () => {
    expect(() => ops.attentionDecode(0, 0, 0, 0, 0, 4, 0, 0, 0, 6, 4, 16, 16, 1, 0, 0)).toThrow(/attention_decode: bad shape/);
  });
});

test("qk_norm_rope_store equals head_rmsnorm, rope and store_kv in sequence", () => {
  const tokens = 3, qh = 4, kvh = 2, hd = 16, stride = (qh + 2 * kvh) * hd, slots = 8, eps = 1e-6;
  const qkv = randomBf16(be, tokens * stride, 11, 2);
  const qNorm = randomBf16(be, hd, 12, 0.5, 1), kNorm = randomBf16(be, hd, 13, 0.5, 1);
  const positions = upload(be, Int32Array.of(3, 0, 9));
  const cs = upload(be, Float32Array.from({ length: 16 * hd }, (_, i) => Math.cos(i * 0.37)));
  const slotIds = upload(be, Int32Array.of(5, 1, 7));
  const run = (fused: boolean) => {
    const x = be.alloc(tokens * stride * 2);
    be.copy(x, qkv.ptr, tokens * stride * 2);
    const kc = be.alloc(slots * kvh * hd * 2), vc = be.alloc(slots * kvh * hd * 2);
    be.fill(kc, 0, slots * kvh * hd * 2);
    be.fill(vc, 0, slots * kvh * hd * 2);
    const k = x + qh * hd * 2, v = k + kvh * hd * 2;
    if (fused) ops.qkNormRopeStore(x, qNorm.ptr, kNorm.ptr, positions, cs, kc, vc, slotIds, tokens, qh, kvh, hd, hd, eps);
    else {
      ops.headRmsnorm(x, qNorm.ptr, tokens, qh, hd, stride, eps);
      ops.headRmsnorm(k, kNorm.ptr, tokens, kvh, hd, stride, eps);
      ops.rope(x, k, positions, cs, tokens, qh, kvh, hd, hd, stride, stride);
      ops.storeKv(kc, vc, k, v, slotIds, tokens, kvh * hd, stride, stride);
    }
    return [readBf16(be, x, tokens * stride), readBf16(be, kc, slots * kvh * hd), readBf16(be, vc, slots * kvh * hd)];
  };
  const [fused, separate] = [run(true), run(false)];
  for (let i = 0; i < 3; i++) expect(Array.from(fused[i])).toEqual(Array.from(separate[i]));
  expect(fused[1].some((x) => x !== 0)).toBe(true);
});

test("scatter_tokens / gather_tokens move tokens through the pool by row", () => {
  const pool = upload(be, new Int32Array(6));
  ops.scatterTokens(pool, upload(be, Int32Array.of(4, 1)), upload(be, Int32Array.of(77, 55)), 2);
  const out = be.alloc(12);
  ops.gatherTokens(out, pool, upload(be, Int32Array.of(1, 4, 0)), 3);
  const got = new Int32Array(3);
  be.download(got, out);
  expect(Array.from(got)).toEqual([55, 77, 0]);
});
