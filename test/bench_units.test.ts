// The arithmetic behind the bench commands: the workload generator against CPython's, the roofline against
// the figures of performance-anchors.md, numpy-style percentiles and the serving metrics.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadModelConfig } from "../src/model/config.ts";
import { kernelCases } from "../bench/kernel_cases.ts";
import { modelCost } from "../bench/model_cost.ts";
import { offlineWorkload } from "../bench/offline_workload.ts";
import { PyRandom } from "../bench/py_random.ts";
import { forwardFloorSeconds, gpuSpec, offlineRooflineSeconds } from "../bench/roofline.ts";
import { servingMetrics } from "../bench/serve_report.ts";
import { median, percentile } from "../bench/stats.ts";
import type { RequestOutcome } from "../bench/stream_request.ts";

const CONFIGS = join(import.meta.dir, "configs");

describe("CPython-compatible random", () => {
  // Expected values printed by CPython 3.11: random.seed(12345678901); random.random(), random.expovariate(4),
  // random.getrandbits(32); and random.Random(7).shuffle(list(range(1, 11))).
  test("random, expovariate, getrandbits and shuffle match CPython", () => {
    const r = new PyRandom(12345678901);
    expect(r.random()).toBe(0.9460118159397316);
    expect(r.expovariate(4)).toBeCloseTo(0.099374218217193, 14);
    expect(r.getrandbits(32)).toBe(1648367662);
    const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    new PyRandom(7).shuffle(xs);
    expect(xs).toEqual([9, 4, 2, 5, 8, 1, 10, 7, 3, 6]);
  });

  test("seed 0 reproduces nano-vllm's offline workload (133,966 output tokens)", () => {
    const w = offlineWorkload(256, [100, 1024], [100, 1024], 0);
    expect(w.prompts[0].slice(0, 5)).toEqual([6311, 6890, 663, 4242, 8376]);
    expect(w.outputLens.slice(0, 5)).toEqual([845, 312, 607, 843, 500]);
    expect(w.prompts.reduce((a, p) => a + p.length, 0)).toBe(142827);
    expect(w.outputLens.reduce((a, b) => a + b, 0)).toBe(133966);
    expect(w.prompts.flat().every((t) => t >= 0 && t <= 10000)).toBe(true);
  });
});

describe("roofline", () => {
  const h100 = gpuSpec("NVIDIA H100 80GB HBM3")!;
  const small = modelCost(loadModelConfig(join(CONFIGS, "Qwen3-0.6B")));
  const big = modelCost(loadModelConfig(join(CONFIGS, "Qwen3-8B")));

  test("GPU specs are found by their nvidia-smi names only", () => {
    expect(h100.memoryBandwidth).toBe(3.0e12);
    expect(gpuSpec("NVIDIA H200")!.memoryBandwidth).toBe(4.3e12);
    expect(gpuSpec("NVIDIA H100 PCIe")).toBeNull();
    expect(gpuSpec(null)).toBeNull();
  });

  test("weights and KV bytes per step as performance-anchors.md counts them", () => {
    expect(small.weightBytesPerStep / 1e9).toBeCloseTo(1.19, 2);
    expect(big.weightBytesPerStep / 1e9).toBeCloseTo(15.1, 1);
    expect(small.kvBytesPerToken).toBe(112 * 1024);
    expect(big.kvBytesPerToken).toBe(144 * 1024);
  });

  test("decode step floors match the anchors' table (context 1024)", () => {
    const ms = (c: typeof small, batch: number) => 1000 * forwardFloorSeconds(c, h100, batch, 1, 1024);
    expect(ms(small, 1)).toBeCloseTo(0.44, 2);
    expect(ms(small, 64)).toBeCloseTo(2.90, 2);
    expect(ms(small, 256)).toBeCloseTo(10.4, 1);
    expect(ms(big, 1)).toBeCloseTo(5.10, 2);
    expect(ms(big, 64)).toBeCloseTo(8.27, 2);
    expect(ms(big, 256)).toBeCloseTo(17.9, 1);
  });

  test("the offline workload's roofline is within 3% of the anchors' simulation (25.5k and 9.7k tok/s on H100)", () => {
    const w = offlineWorkload(256, [100, 1024], [100, 1024], 0);
    const requests = w.prompts.map((p, i) => ({ inputLen: p.length, outputLen: w.outputLens[i] }));
    const limits = { maxRunningRequests: 256, maxPrefillTokens: 8192 };
    expect(Math.abs(133966 / offlineRooflineSeconds(small, h100, requests, limits) / 25500 - 1)).toBeLessThan(0.03);
    expect(Math.abs(133966 / offlineRooflineSeconds(big, h100, requests, limits) / 9700 - 1)).toBeLessThan(0.03);
  });

  test("kernel cases have unique names and real Qwen3 shapes", () => {
    for (const sizes of ["full", "smoke"] as const) {
      const cases = kernelCases(sizes);
      expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
      for (const c of cases) expect(c.bytes > 0 && c.flops > 0).toBe(true);
    }
    const gateUp = kernelCases("full").find((c) => c.name === "gemm qwen3-8b gate_up m=1")!;
    expect(gateUp.shape).toEqual({ m: 1, n: 24576, k: 4096, out_f32: 0 });
  });
});

describe("serving metrics", () => {
  test("percentiles interpolate like numpy", () => {
    expect(median([3, 1, 2, 10])).toBe(2.5);
    expect(percentile([1, 2, 3, 4, 5], 99)).toBeCloseTo(4.96, 10);
    expect(percentile([7], 95)).toBe(7);
    expect(Number.isNaN(percentile([], 50))).toBe(true);
  });

  test("throughputs, concurrency and TPOT follow sglang.bench_serving", () => {
    const ok = (e2eMs: number, ttftMs: number, outputTokens: number, itlMs: number[]): RequestOutcome =>
      ({ ok: true, error: null, promptTokens: 10, outputTokens, ttftMs, itlMs, e2eMs });
    const failed: RequestOutcome = { ok: false, error: "HTTP 503", promptTokens: 10, outputTokens: 0, ttftMs: 0, itlMs: [], e2eMs: 5 };
    const m = servingMetrics([ok(1000, 100, 10, [100, 100]), ok(2000, 200, 19, [50]), failed], 2);
    expect(m.completed).toBe(2);
    expect(m.failed).toBe(1);
    expect(m.errors).toEqual(["HTTP 503"]);
    expect(m.total_input_tokens).toBe(20);
    expect(m.total_output_tokens).toBe(29);
    expect(m.request_throughput).toBe(1);
    expect(m.output_throughput).toBe(14.5);
    expect(m.concurrency).toBe(1.5);
    expect(m.tpot.mean_ms).toBe(100); // (1000 − 100) / 9 and (2000 − 200) / 18
    expect(m.ttft.median_ms).toBe(150);
    expect(m.itl.max_ms).toBe(100);
  });
});
