// The CUDA sampling ops against the CPU library on the same logits: argmax, penalties and sparse adds bit for bit;
// seeded draws token for token, where a difference is accepted only at a decision that fp32 rounding can flip
// (counted, at most 0.5% of the draws, each one checked); logprobs within 1e-4 with identical top ids.
import { expect, test } from "bun:test";
import type { Backend } from "../../src/backend/backend.ts";
import { rng, type Rng, sampleUniform } from "../helpers/rng.ts";
import { describeGpu } from "./gpu.ts";
import { SIDES, type Twin, twinBuffers } from "./twins.ts";

const QWEN_VOCAB = 151936;
const ROWS = [1, 7, 64, 256];

// Row kinds, cycled by row: realistic spread, many exact ties, -inf bans, all equal, one dominant token, 3 levels.
const KINDS = ["normal", "ties", "bans", "flat", "peaked", "levels"] as const;

function normal(r: Rng): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

function makeLogits(rows: number, vocab: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(rows * vocab);
  for (let row = 0; row < rows; row++) {
    const kind = KINDS[row % KINDS.length];
    const l = x.subarray(row * vocab, (row + 1) * vocab);
    for (let i = 0; i < vocab; i++) {
      if (kind === "normal") l[i] = 3 * normal(r);
      else if (kind === "ties") l[i] = Math.round(8 * normal(r)) / 4;
      else if (kind === "bans") l[i] = i % 7 === 3 || r() < 0.05 ? -Infinity : 2 * normal(r);
      else if (kind === "peaked") l[i] = normal(r);
      else if (kind === "levels") l[i] = Math.floor(3 * r());
    }
    if (kind === "peaked") l[Math.floor(r() * vocab)] += 25;
  }
  return x;
}

interface Mix { t: number; k: number; p: number; minP: number } // k = -1: the whole vocabulary
const MIXES: Mix[] = [
  { t: 0, k: 0, p: 1, minP: 0 }, { t: 0.7, k: 0, p: 1, minP: 0 }, { t: 1, k: 0, p: 1, minP: 0 }, { t: 1.6, k: 0, p: 1, minP: 0 },
  { t: 1, k: 1, p: 1, minP: 0 }, { t: 1, k: 2, p: 1, minP: 0 }, { t: 0.8, k: 20, p: 1, minP: 0 }, { t: 1, k: -1, p: 1, minP: 0 },
  { t: 1, k: 0, p: 0.1, minP: 0 }, { t: 1, k: 0, p: 0.9, minP: 0 }, { t: 0.9, k: 0, p: 0.999, minP: 0 },
  { t: 1, k: 0, p: 1, minP: 0.05 }, { t: 1.2, k: 0, p: 1, minP: 0.3 }, { t: 0.7, k: 20, p: 0.95, minP: 0 },
  { t: 1, k: 50, p: 0.9, minP: 0.05 }, { t: 1.3, k: 1000, p: 0.99, minP: 0.1 }, { t: 0.5, k: 3000, p: 0.5, minP: 0.02 },
];

/** Token ids in rank order: larger logit first, lower id first on ties. */
function rankOrder(l: Float32Array): number[] {
  return Array.from({ length: l.length }, (_, i) => i).sort((a, b) => (l[a] === l[b] ? a - b : l[a] > l[b] ? -1 : 1));
}

// fp32 exp differs between the GPU and glibc by an ulp or two (~2.4e-7 relative); sums differ by less.
const TOL = 1e-6;

/**
 * The tokens a draw can yield, recomputed in doubles, when every decision within TOL (relative) of flipping goes
 * either way: the top-p cut one token earlier or later, min-p tokens with w within TOL of min_p kept or dropped,
 * and the inverse-CDF step the neighbouring token when the target lies within TOL of their boundary.
 */
function plausibleDraws(l: Float32Array, mix: Mix, u: number): Set<number> {
  const t = Math.fround(mix.t), p = Math.fround(mix.p), minP = Math.fround(mix.minP);
  const out = new Set<number>();
  if (!(t > 0) || mix.k === 1) return out; // greedy: no rounding can change the answer
  const order = rankOrder(l);
  const lmax = l[order[0]];
  const w = Float64Array.from(l, (x) => Math.fround(Math.exp(Math.fround(Math.fround(x - lmax) / t))));
  const byTopK = order.slice(0, mix.k > 0 && mix.k < l.length ? mix.k : l.length).filter((i) => w[i] > 0);
  const sum = (ids: number[]) => ids.reduce((s, i) => s + w[i], 0);
  let cuts = [byTopK.length];
  if (p < 1) {
    const total = sum(byTopK), target = p * total;
    let cum = 0;
    for (let j = 0; j < byTopK.length; j++) {
      const before = cum;
      cum += w[byTopK[j]];
      if (cum < target) continue;
      cuts = [j + 1];
      if (cum - target <= TOL * total) cuts.push(j + 2);
      if (target - before <= TOL * total) cuts.push(j);
      break;
    }
  }
  for (const cut of cuts) {
    const prefix = byTopK.slice(0, cut); // min-p keeps a rank prefix of it too
    const sure = prefix.filter((i) => w[i] >= minP * (1 + TOL)).length, maybe = prefix.filter((i) => w[i] >= minP * (1 - TOL)).length;
    for (let n = Math.max(sure, 1); n <= maybe; n++) {
      const kept = prefix.slice(0, n), mass = sum(kept), x = u * mass;
      let cum = 0;
      for (let j = 0; j < n; j++) {
        const before = cum;
        cum += w[kept[j]];
        if (cum <= x && j < n - 1) continue;
        out.add(kept[j]);
        if (cum - x <= TOL * mass && j + 1 < n) out.add(kept[j + 1]);
        if (x - before <= TOL * mass && j > 0) out.add(kept[j - 1]);
        break;
      }
    }
  }
  return out;
}

describeGpu("CUDA sampling ops match the CPU library", (gpu: Backend, cpu: Backend) => {
  const { backends, put, out, run, read } = twinBuffers(gpu, cpu);
  const ints = (twin: Twin, n: number) => read((m) => new Int32Array(m), twin, n);

  test("argmax: identical to the CPU (ties lowest id, -inf rows, every row kind, odd vocabularies)", () => {
    for (const vocab of [QWEN_VOCAB, 4097, 33, 1]) {
      for (const rows of ROWS) {
        const host = makeLogits(rows, vocab, vocab + rows);
        if (rows > 1) host.fill(-Infinity, vocab, 2 * vocab); // row 1: all -inf → 0
        const logits = put(host), o = out(rows * 4);
        run((ops, s) => ops.argmax(o[s], logits[s], rows, vocab));
        const [g, c] = ints(o, rows);
        expect([vocab, rows, Array.from(g)]).toEqual([vocab, rows, Array.from(c)]);
      }
    }
  }, 120_000);

  test("sample: the GPU draws the CPU's token for every parameter mix, seed and step, up to rounding at boundaries", () => {
    let draws = 0;
    const boundary: string[] = [], wrong: string[] = [];
    for (const vocab of [QWEN_VOCAB, 4097, 1000, 33, 1]) {
      for (const rows of ROWS) {
        const host = makeLogits(rows, vocab, 7 * vocab + rows);
        const logits = put(host), o = out(rows * 4);
        const r = rng(vocab ^ (rows << 20));
        for (let round = 0; round < (vocab === QWEN_VOCAB ? 3 : 8); round++) {
          const mixes = Array.from({ length: rows }, (_, row) => MIXES[(row * 5 + round * 3 + rows) % MIXES.length]);
          const seeds = Uint32Array.from(mixes, () => Math.floor(r() * 2 ** 32));
          const steps = Int32Array.from(mixes, () => Math.floor(r() * 2 ** 32) - 2 ** 31);
          const t = put(Float32Array.from(mixes, (m) => m.t)), p = put(Float32Array.from(mixes, (m) => m.p));
          const k = put(Int32Array.from(mixes, (m) => (m.k < 0 ? vocab : m.k))), minP = put(Float32Array.from(mixes, (m) => m.minP));
          const sd = put(seeds), st = put(steps);
          const sample = () => run((ops, s) => ops.sample(o[s], logits[s], rows, vocab, t[s], k[s], p[s], minP[s], sd[s], st[s]));
          sample();
          const [g, c] = ints(o, rows);
          sample(); // the GPU draw is deterministic
          expect(Array.from(ints(o, rows)[0])).toEqual(Array.from(g));
          for (let row = 0; row < rows; row++) {
            draws++;
            if (g[row] === c[row]) continue;
            const l = host.subarray(row * vocab, (row + 1) * vocab);
            const what = `vocab ${vocab} rows ${rows} row ${row} (${KINDS[row % KINDS.length]}) ${JSON.stringify(mixes[row])}: gpu ${g[row]}, cpu ${c[row]}`;
            const plausible = plausibleDraws(l, mixes[row], sampleUniform(seeds[row], steps[row]));
            (plausible.has(g[row]) && plausible.has(c[row]) ? boundary : wrong).push(what);
          }
        }
        const after = new Float32Array(rows * vocab);
        gpu.download(after, logits.gpu);
        expect(Buffer.from(after.buffer).equals(Buffer.from(host.buffer))).toBe(true); // logits are not modified
      }
    }
    if (boundary.length) console.log(`sample: ${boundary.length} of ${draws} draws differ at a rounding boundary:\n${boundary.join("\n")}`);
    expect(wrong).toEqual([]);
    expect(boundary.length).toBeLessThanOrEqual(0.005 * draws);
    expect(draws).toBeGreaterThan(2000);
  }, 600_000);

  test("logprobs: chosen and top-k log-probabilities within 1e-4, top ids identical (rank order is exact on both)", () => {
    for (const [vocab, rows] of [[QWEN_VOCAB, 64], [QWEN_VOCAB, 7], [4097, 256], [33, 7], [1, 1]]) {
      const host = makeLogits(rows, vocab, vocab * 3 + rows);
      const logits = put(host);
      const r = rng(rows);
      const chosen = put(Int32Array.from({ length: rows }, () => Math.floor(r() * vocab)));
      for (const k of new Set([0, 1, Math.min(20, vocab), vocab <= 64 ? vocab : 300])) {
        const lp = out(rows * 4), ids = out(rows * k * 4), top = out(rows * k * 4);
        run((ops, s) => ops.logprobs(lp[s], k ? ids[s] : 0, k ? top[s] : 0, logits[s], chosen[s], rows, vocab, k));
        const near = ([g, c]: [Float32Array, Float32Array]) =>
          Array.from(c).flatMap((v, i) => (v === g[i] || Math.abs(v - g[i]) <= 1e-4 ? [] : [`${i}: gpu ${g[i]}, cpu ${v}`]));
        expect([vocab, k, near(read((n) => new Float32Array(n), lp, rows))]).toEqual([vocab, k, []]);
        if (!k) continue;
        const [gi, ci] = ints(ids, rows * k);
        expect([vocab, k, Array.from(gi)]).toEqual([vocab, k, Array.from(ci)]);
        expect([vocab, k, near(read((n) => new Float32Array(n), top, rows * k))]).toEqual([vocab, k, []]);
      }
    }
  }, 120_000);

  test("apply_penalties and add_sparse: bit-identical to the CPU, -inf bans included", () => {
    // Exact only where both compute frequency * count + presence alike: the CPU library's default -march=native
    // build fuses it into one FMA, as the kernel does.
    const rows = 64, vocab = 4097, r = rng(42);
    const host = makeLogits(rows, vocab, 5).map((v) => (Number.isFinite(v) ? v : 0));
    host[17] = 0, host[18] = -0;
    const logits = put(host);
    const entries = (perRow: number) => {
      const rowIds: number[] = [], tokens: number[] = [];
      for (let row = 0; row < rows; row++) {
        const picked = new Set<number>([17, 18].filter(() => row === 0));
        while (picked.size < perRow) picked.add(Math.floor(r() * vocab));
        for (const t of picked) rowIds.push(row), tokens.push(t);
      }
      return { n: rowIds.length, rows: put(Int32Array.from(rowIds)), tokens: put(Int32Array.from(tokens)) };
    };
    const e = entries(300);
    const counts = put(Int32Array.from({ length: e.n }, () => (r() < 0.4 ? 0 : 1 + Math.floor(r() * 5))));
    const perRow = (lo: number, hi: number) => put(Float32Array.from({ length: rows }, () => lo + r() * (hi - lo)));
    const presence = perRow(-1, 2), frequency = perRow(-0.5, 1.5), repetition = perRow(0.8, 2);
    run((ops, s) => ops.applyPenalties(logits[s], vocab, e.n, e.rows[s], e.tokens[s], counts[s], presence[s], frequency[s], repetition[s]));
    const bits = () => read((n) => new Uint32Array(n), logits, rows * vocab).map((a) => Array.from(a));
    expect(bits()[0]).toEqual(bits()[1]);
    const b = entries(120);
    const values = put(Float32Array.from({ length: b.n }, () => (r() < 0.2 ? -Infinity : 4 * normal(r))));
    run((ops, s) => ops.addSparse(logits[s], vocab, b.n, b.rows[s], b.tokens[s], values[s]));
    run((ops, s) => ops.addSparse(logits[s], vocab, 0, b.rows[s], b.tokens[s], values[s])); // no entries: no-op
    expect(bits()[0]).toEqual(bits()[1]);
  }, 60_000);

  test("bad shapes are rejected as on the CPU", () => {
    const x = put(new Float32Array(64)), o = out(64);
    for (const s of SIDES) {
      const ops = backends[s].ops;
      expect(() => ops.argmax(o[s], x[s], 1, 0)).toThrow();
      expect(() => ops.sample(o[s], x[s], -1, 8, x[s], x[s], x[s], x[s], x[s], x[s])).toThrow();
      expect(() => ops.logprobs(o[s], o[s], o[s], x[s], x[s], 1, 8, 9)).toThrow();
      expect(() => ops.logprobs(o[s], 0, 0, x[s], x[s], 1, 8, 2)).toThrow();
      expect(() => ops.addSparse(x[s], 8, -1, x[s], x[s], x[s])).toThrow();
      ops.sample(o[s], x[s], 0, 8, x[s], x[s], x[s], x[s], x[s], x[s]); // zero rows: nothing to do
    }
  });
});
