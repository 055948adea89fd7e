// The sampling ops and the Sampler on the CPU backend: greedy, batch-independent seeded draws, the sampled
// distributions (chi-square against the exact filtered distribution), penalties, logit bias, bans and logprobs.
import { afterAll, describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { DevicePtr } from "../src/backend/backend.ts";
import { Sampler, type SamplerRow } from "../src/engine/sampler.ts";
import { DEFAULT_SAMPLING_PARAMS, resolveSamplingParams, type SamplingParamsInput } from "../src/engine/sampling_params.ts";
import { sampleUniform } from "./helpers/rng.ts";

const backend = new CpuBackend();
const allocations: DevicePtr[] = [];
const samplers: Sampler[] = [];

afterAll(() => {
  for (const p of allocations) backend.free(p);
  for (const s of samplers) s.free();
});

function newSampler(maxRows: number, vocab: number): Sampler {
  const s = new Sampler(backend, maxRows, vocab, device(new Int32Array(maxRows)));
  samplers.push(s);
  return s;
}

function device(data: Float32Array | Int32Array | Uint32Array): DevicePtr {
  const p = backend.alloc(Math.max(data.byteLength, 4));
  allocations.push(p);
  backend.upload(p, data);
  return p;
}

function downloadF32(p: DevicePtr, n: number): Float32Array {
  const out = new Float32Array(n);
  backend.download(out, p);
  return out;
}

function row(vocab: number, params: SamplingParamsInput, seed: number, step: number, extra: Partial<SamplerRow> = {}): SamplerRow {
  return {
    params: resolveSamplingParams(params, DEFAULT_SAMPLING_PARAMS, vocab),
    poolRow: 0,
    seed,
    step,
    promptTokens: [],
    outputTokens: [],
    banned: [],
    ...extra,
  };
}

/** A deterministic pseudo-random stream in [0, 1) for test data. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Token ids in rank order: larger logit first, lower id first on ties. */
function rankOrder(logits: ArrayLike<number>): number[] {
  return Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
}

function argmax(logits: ArrayLike<number>): number {
  return rankOrder(logits)[0];
}

interface Filters { temperature: number; topK?: number; topP?: number; minP?: number }

/** The exact distribution msgl_sample draws from (header: temperature → top-k → top-p → min-p), in doubles. */
function targetDistribution(logits: ArrayLike<number>, f: Filters): number[] {
  const order = rankOrder(logits);
  const max = logits[order[0]];
  const w = Array.from(logits, (l) => Math.exp((l - max) / f.temperature));
  let kept = f.topK && f.topK < order.length ? order.slice(0, f.topK) : order;
  if (f.topP !== undefined && f.topP < 1) {
    const mass = kept.reduce((s, i) => s + w[i], 0);
    let cum = 0;
    const n = kept.findIndex((i) => (cum += w[i]) >= f.topP! * mass);
    kept = kept.slice(0, n + 1);
  }
  kept = kept.filter((i) => w[i] >= (f.minP ?? 0));
  const z = kept.reduce((s, i) => s + w[i], 0);
  const p = new Array<number>(logits.length).fill(0);
  for (const i of kept) p[i] = w[i] / z;
  return p;
}

/** The token msgl_sample must return: inverse CDF in rank order over the target distribution. */
function referenceDraw(logits: ArrayLike<number>, f: Filters, seed: number, step: number): number {
  if (f.temperature === 0) return argmax(logits);
  const p = targetDistribution(logits, f);
  const u = sampleUniform(seed, step);
  let cum = 0;
  let last = -1;
  for (const i of rankOrder(logits)) {
    if (p[i] === 0) continue;
    last = i;
    if ((cum += p[i]) > u) return i;
  }
  return last;
}

function logSoftmax(logits: ArrayLike<number>): number[] {
  const max = Math.max(...Array.from(logits));
  const lse = max + Math.log(Array.from(logits).reduce((s, l) => s + Math.exp(l - max), 0));
  return Array.from(logits, (l) => l - lse);
}

// ln Γ (Lanczos) and the regularized upper incomplete gamma Q(a, x), for chi-square p-values.
function lnGamma(x: number): number {
  const c = [76.18009172947146, -86.50532032941677, 24.01409824083091, -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5];
  let y = x;
  const t = x + 5.5 - (x + 0.5) * Math.log(x + 5.5);
  let s = 1.000000000190015;
  for (const ci of c) s += ci / ++y;
  return -t + Math.log((2.5066282746310005 * s) / x);
}

function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const prefix = Math.exp(-x + a * Math.log(x) - lnGamma(a));
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 1000 && Math.abs(term) > Math.abs(sum) * 1e-15; n++) sum += term *= x / (a + n);
    return 1 - sum * prefix;
  }
  // Lentz's continued fraction.
  let b = x + 1 - a;
  let c = 1e300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    d = Math.abs(d) < 1e-300 ? 1e-300 : d;
    c = b + an / c;
    c = Math.abs(c) < 1e-300 ? 1e-300 : c;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return prefix * h;
}

/** Chi-square goodness-of-fit p-value (bins with expected < 5 merged); 0 when a token with p = 0 was drawn. */
function chiSquarePValue(counts: number[], p: number[]): number {
  if (p.some((pi, i) => pi === 0 && counts[i] > 0)) return 0;
  const total = counts.reduce((s, c) => s + c, 0);
  let stat = 0;
  let bins = 0;
  let restObserved = 0;
  let restExpected = 0;
  p.forEach((pi, i) => {
    if (pi === 0) return;
    const e = pi * total;
    if (e < 5) {
      restObserved += counts[i];
      restExpected += e;
      return;
    }
    stat += (counts[i] - e) ** 2 / e;
    bins++;
  });
  if (restExpected > 0) {
    stat += (restObserved - restExpected) ** 2 / restExpected;
    bins++;
  }
  return gammaQ((bins - 1) / 2, stat / 2);
}

const P_THRESHOLD = 1e-4;

// 12 tokens; ids 3 and 5 tie, so top-k 3 must keep 3 and drop 5.
const SMALL = new Float32Array([1.0, 2.2, 0.4, 1.6, -0.3, 1.6, 0.9, -1.2, 0.1, 2.5, -2.0, 0.6]);
const DRAWS = 20000;
const CHUNK = 2000;

/** DRAWS tokens for one request (seed fixed, steps 0..DRAWS-1), sampled CHUNK rows at a time. */
let drawing: { sampler: Sampler; logits: DevicePtr } | null = null;

function draw(params: SamplingParamsInput, seed = 20240601): number[] {
  const vocab = SMALL.length;
  if (!drawing) {
    const host = new Float32Array(CHUNK * vocab);
    for (let r = 0; r < CHUNK; r++) host.set(SMALL, r * vocab);
    drawing = { sampler: newSampler(CHUNK, vocab), logits: device(host) };
  }
  const { sampler, logits } = drawing;
  const counts = new Array<number>(vocab).fill(0);
  for (let start = 0; start < DRAWS; start += CHUNK) {
    const rows = Array.from({ length: CHUNK }, (_, r) => row(vocab, params, seed, start + r));
    for (const t of sampler.sample(logits, rows)().tokens) counts[t]++;
  }
  return counts;
}

describe("msgl_sample", () => {
  test("temperature 0 and top_k 1 pick the argmax, lowest id on ties; logits stay unchanged", () => {
    const vocab = 257;
    const rand = lcg(7);
    const rows = 6;
    const host = new Float32Array(rows * vocab).map(() => Math.round(rand() * 8) / 2);
    host[3 * vocab + 200] = 10; // ties of the maximum in row 3: ids 17 and 200
    host[3 * vocab + 17] = 10;
    const logits = device(host);
    const zeros = new Uint32Array(rows);
    const out = backend.alloc(rows * 4);
    allocations.push(out);
    for (const [temperature, topK] of [[0, 0], [1, 1], [0.5, 1]]) {
      backend.ops.sample(out, logits, rows, vocab, device(new Float32Array(rows).fill(temperature)),
        device(new Int32Array(rows).fill(topK)), device(new Float32Array(rows).fill(1)), device(new Float32Array(rows)),
        device(zeros), device(new Int32Array(rows).map((_, i) => i)));
      const tokens = new Int32Array(rows);
      backend.download(tokens, out);
      for (let r = 0; r < rows; r++) expect(tokens[r]).toBe(argmax(host.subarray(r * vocab, (r + 1) * vocab)));
      expect(tokens[3]).toBe(17);
    }
    expect(downloadF32(logits, rows * vocab)).toEqual(host);
  });

  test("every draw is the reference inverse CDF of the documented hash (ties, filters, large vocab)", () => {
    const vocab = 3000;
    const rows = 400;
    const rand = lcg(99);
    const host = new Float32Array(rows * vocab).map(() => Math.round((rand() * 12 - 6) * 4) / 4); // many ties
    const filters: Filters[] = [];
    const seeds = new Uint32Array(rows);
    const steps = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      filters.push({
        temperature: [0, 0.3, 0.8, 1, 1.7][r % 5],
        topK: [0, 1, 5, 50, 2999, 3000][r % 6],
        topP: [1, 0.9, 0.5, 0.99][r % 4],
        minP: [0, 0.05, 0.3][r % 3],
      });
      seeds[r] = Math.floor(rand() * 2 ** 32);
      steps[r] = Math.floor(rand() * 100000);
    }
    const out = backend.alloc(rows * 4);
    allocations.push(out);
    backend.ops.sample(out, device(host), rows, vocab, device(new Float32Array(filters.map((f) => f.temperature))),
      device(new Int32Array(filters.map((f) => f.topK ?? 0))), device(new Float32Array(filters.map((f) => f.topP ?? 1))),
      device(new Float32Array(filters.map((f) => f.minP ?? 0))), device(seeds), device(steps));
    const tokens = new Int32Array(rows);
    backend.download(tokens, out);
    for (let r = 0; r < rows; r++) {
      const logits = host.subarray(r * vocab, (r + 1) * vocab);
      expect([r, tokens[r]]).toEqual([r, referenceDraw(logits, filters[r], seeds[r], steps[r])]);
    }
  });
});

describe("Sampler", () => {
  test("greedy rows return the argmax (fast path and full path)", () => {
    const vocab = 1000;
    const rand = lcg(3);
    const host = new Float32Array(4 * vocab).map(() => rand() * 10);
    host[2 * vocab + 5] = 20;
    host[2 * vocab + 600] = 20;
    const logits = device(host);
    const sampler = newSampler(8, vocab);
    const expected = [0, 1, 2, 3].map((r) => argmax(host.subarray(r * vocab, (r + 1) * vocab)));
    expect(expected[2]).toBe(5);
    const greedy = [0, 1, 2, 3].map((r) => row(vocab, { temperature: 0 }, r, 0));
    expect(Array.from(sampler.sample(logits, greedy)().tokens)).toEqual(expected);
    // A logprobs row sends the batch down the full path; the greedy answers must not change.
    greedy[1] = row(vocab, { temperature: 0, logprobs: true }, 1, 0);
    const full = sampler.sample(logits, greedy)();
    expect(Array.from(full.tokens)).toEqual(expected);
    expect(full.logprobs).toBeDefined();
  });

  test("a row's draw depends on its seed, step and logits, not on its batch neighbours", () => {
    const vocab = 1000;
    const rand = lcg(11);
    const mine = new Float32Array(vocab).map(() => rand() * 2);
    const others = [0, 1, 2, 3].map(() => new Float32Array(vocab).map(() => rand() * 6));
    const sampler = newSampler(8, vocab);
    const params = { temperature: 1.1, topP: 0.95 };
    const neighbours = [
      row(vocab, { temperature: 0 }, 1, 3),
      row(vocab, { temperature: 0.5, topK: 20, repetitionPenalty: 1.2 }, 2, 9, { outputTokens: [1, 2, 3] }),
      row(vocab, { temperature: 2, logprobs: true, topLogprobs: 4 }, 3, 1),
      row(vocab, { temperature: 1, logitBias: { 7: 5 } }, 4, 4, { banned: [8] }),
    ];
    for (const [seed, step] of [[1234, 7], [1234, 8], [99, 7], [0xffffffff, 123456]]) {
      const results = new Set<number>();
      for (const position of [0, 1, 2, 4]) {
        const batch = [...neighbours.slice(0, position)];
        const host = new Float32Array((position + 1) * vocab);
        batch.forEach((_, i) => host.set(others[(i + position) % 4], i * vocab));
        host.set(mine, position * vocab);
        batch.push(row(vocab, params, seed, step));
        results.add(sampler.sample(device(host), batch)().tokens[position]);
      }
      expect(results.size).toBe(1);
      expect([...results][0]).toBe(referenceDraw(mine, params, seed, step));
    }
  });

  test("different steps and seeds give different draws", () => {
    const vocab = 1000;
    const sampler = newSampler(200, vocab);
    const logits = device(new Float32Array(200 * vocab)); // uniform
    const bySteps = sampler.sample(logits, Array.from({ length: 200 }, (_, i) => row(vocab, {}, 5, i)))().tokens;
    const bySeeds = sampler.sample(logits, Array.from({ length: 200 }, (_, i) => row(vocab, {}, i, 5)))().tokens;
    // 200 uniform draws from 1000 tokens: about 181 distinct expected.
    expect(new Set(bySteps).size).toBeGreaterThan(160);
    expect(new Set(bySeeds).size).toBeGreaterThan(160);
  });

  const configs: [string, Filters][] = [
    ["temperature 0.7", { temperature: 0.7 }],
    ["temperature 1.5", { temperature: 1.5 }],
    ["top_k 3 (tie at the boundary)", { temperature: 1, topK: 3 }],
    ["top_p 0.8", { temperature: 1, topP: 0.8 }],
    ["min_p 0.2", { temperature: 1, minP: 0.2 }],
    ["combined", { temperature: 0.9, topK: 8, topP: 0.9, minP: 0.175 }],
  ];
  for (const [name, f] of configs) {
    test(`${name}: draws fit the exact distribution; filtered tokens never drawn`, () => {
      const counts = draw(f);
      const p = targetDistribution(SMALL, f);
      p.forEach((pi, i) => {
        if (pi === 0) expect([i, counts[i]]).toEqual([i, 0]);
      });
      expect(chiSquarePValue(counts, p)).toBeGreaterThan(P_THRESHOLD);
    });
  }

  test("the filters keep the expected token sets", () => {
    const kept = (f: Filters) => targetDistribution(SMALL, f).flatMap((p, i) => (p > 0 ? [i] : []));
    expect(kept({ temperature: 1, topK: 3 })).toEqual([1, 3, 9]);
    expect(kept({ temperature: 1, topP: 0.8 }).length).toBeLessThan(SMALL.length);
    expect(kept({ temperature: 1, minP: 0.2 }).length).toBeLessThan(SMALL.length);
    // top-k 8, then top-p 0.9 keeps 6 (9, 1, 3, 5, 0, 6), then min-p drops 6
    expect(kept({ temperature: 0.9, topK: 8, topP: 0.9, minP: 0.175 })).toEqual([0, 1, 3, 5, 9]);
  });

  test("the chi-square check rejects a wrong distribution", () => {
    const counts = draw({ temperature: 0.7 });
    expect(chiSquarePValue(counts, targetDistribution(SMALL, { temperature: 0.8 }))).toBeLessThan(P_THRESHOLD);
    // top-k 3 keeping the other of the tied ids 3 and 5
    const topK = draw({ temperature: 1, topK: 3 });
    const swapped = targetDistribution(SMALL, { temperature: 1, topK: 3 });
    [swapped[3], swapped[5]] = [swapped[5], swapped[3]];
    expect(chiSquarePValue(topK, swapped)).toBeLessThan(P_THRESHOLD);
  });

  test("penalties, logit bias and bans change the logits as computed by hand", () => {
    const vocab = 8;
    const base = [1.0, 0.5, 2.0, -1.0, 0.0, 3.0, -0.5, 1.5];
    const logits = device(new Float32Array([...base, ...base]));
    const sampler = newSampler(4, vocab);
    const rows = [
      row(vocab, { temperature: 0, repetitionPenalty: 1.3, presencePenalty: 0.4, frequencyPenalty: 0.25, logitBias: { 1: 2.5, 4: -1 } },
        0, 4, { promptTokens: [2, 3, 3], outputTokens: [0, 2, 2, 5], banned: [5] }),
      row(vocab, { temperature: 0, presencePenalty: 0.5 }, 0, 3, { promptTokens: [6, 7], outputTokens: [7, 7, 3] }),
    ];
    const result = sampler.sample(logits, rows)();
    const after = downloadF32(logits, 2 * vocab);
    const expected = [
      // 1/1.3 − (0.25 + 0.4), 0.5 + 2.5, 2/1.3 − (0.5 + 0.4), −1·1.3, 0 − 1, banned, unchanged, unchanged
      [0.1192308, 3.0, 0.6384615, -1.3, -1.0, -Infinity, -0.5, 1.5],
      // presence only: prompt-only token 6 unchanged, 7 (twice) −0.5, 3 (once) −0.5
      [1.0, 0.5, 2.0, -1.5, 0.0, 3.0, -0.5, 1.0],
    ].flat();
    expected.forEach((v, i) => {
      if (v === -Infinity) expect(after[i]).toBe(-Infinity);
      else expect(after[i]).toBeCloseTo(v, 5);
    });
    expect(Array.from(result.tokens)).toEqual([1, 5]);
  });

  test("msgl_apply_penalties and msgl_add_sparse on explicit entries", () => {
    const vocab = 6;
    const host = new Float32Array([1, -1, 2, 0.5, -2, 3, 1, -1, 2, 0.5, -2, 3]);
    const logits = device(host);
    backend.ops.applyPenalties(logits, vocab, 5, device(new Int32Array([0, 0, 0, 1, 1])), device(new Int32Array([0, 1, 2, 3, 4])),
      device(new Int32Array([2, 0, 1, 0, 3])), device(new Float32Array([0.5, 0.2])), device(new Float32Array([0.1, 0.3])),
      device(new Float32Array([1.5, 2])));
    const penalized = [-0.0333333, -1.5, 0.7333333, 0.5, -2, 3, 1, -1, 2, 0.25, -5.1, 3];
    downloadF32(logits, 12).forEach((v, i) => expect(v).toBeCloseTo(penalized[i], 5));
    backend.ops.addSparse(logits, vocab, 3, device(new Int32Array([1, 0, 1])), device(new Int32Array([5, 1, 0])),
      device(new Float32Array([-Infinity, 0.75, -0.5])));
    const biased = [...penalized];
    biased[vocab + 5] = -Infinity;
    biased[1] += 0.75;
    biased[vocab] -= 0.5;
    downloadF32(logits, 12).forEach((v, i) => (biased[i] === -Infinity ? expect(v).toBe(-Infinity) : expect(v).toBeCloseTo(biased[i], 5)));
  });

  test("banned tokens are never sampled", () => {
    const vocab = 16;
    const n = 1000;
    const host = new Float32Array(n * vocab);
    for (let r = 0; r < n; r++) host.set([8, 7.5, ...new Array<number>(vocab - 2).fill(0)], r * vocab);
    const sampler = newSampler(n, vocab);
    const tokens = sampler.sample(device(host), Array.from({ length: n }, (_, i) =>
      row(vocab, { temperature: 1.5, topK: 4 }, 77, i, { banned: [0, 1] })))().tokens;
    expect(tokens.includes(0) || tokens.includes(1)).toBe(false);
    expect(new Set(tokens).size).toBe(4); // top-4 of what is left: 2, 3, 4, 5 (ties by lower id)
  });

  test("logprobs: log_softmax of the penalized, unscaled logits; top-k descending, ties lower id first", () => {
    const vocab = 8;
    const base = [0.5, 2.0, -1.0, 2.0, 1.0, -3.0, 0.0, 1.0];
    const logits = device(new Float32Array([...base, ...base, ...base]));
    const sampler = newSampler(4, vocab);
    const result = sampler.sample(logits, [
      row(vocab, { temperature: 0.5, logprobs: true, topLogprobs: 3 }, 1, 0),
      row(vocab, { temperature: 1, topLogprobs: 5, logitBias: { 5: 4 } }, 2, 0),
      row(vocab, { temperature: 0 }, 3, 0),
    ])();
    expect(result.topK).toBe(5);
    const rowsLogits = [base, base.map((l, i) => (i === 5 ? l + 4 : l)), base];
    const expectedTop = [[1, 3, 4, 7, 0], [1, 3, 4, 5, 7], [1, 3, 4, 7, 0]];
    for (let r = 0; r < 3; r++) {
      const ref = logSoftmax(rowsLogits[r]);
      expect(result.logprobs![r]).toBeCloseTo(ref[result.tokens[r]], 5);
      expect(Array.from(result.topIds!.subarray(r * 5, r * 5 + 5))).toEqual(expectedTop[r]);
      result.topLogprobs!.subarray(r * 5, r * 5 + 5).forEach((lp, j) => expect(lp).toBeCloseTo(ref[expectedTop[r][j]], 5));
    }
    expect(result.tokens[2]).toBe(1);
  });

  test("sparse entries beyond the initial capacity re-allocate", () => {
    const vocab = 200000; // its 200000 penalty entries exceed the initial room for 65536
    const sampler = newSampler(1, vocab);
    const host = new Float32Array(vocab);
    host[4242] = 5;
    const promptTokens = Array.from({ length: vocab }, (_, i) => i);
    const logits = device(host);
    const result = sampler.sample(logits, [row(vocab, { temperature: 0, repetitionPenalty: 2 }, 0, 0, { promptTokens })])();
    expect(result.tokens[0]).toBe(4242);
    expect(downloadF32(logits, vocab)[4242]).toBeCloseTo(2.5, 6);
  });
});
