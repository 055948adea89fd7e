// The engine on the CPU backend: greedy outputs against transformers and invariant under scheduling
// choices, prefix reuse, KV pressure, aborts, n > 1 and bad input.
import { describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu.ts";
import { Engine, type EngineOptions } from "../src/engine/engine.ts";
import { expectIdleInvariants, runToEnd } from "./helpers/engine_run.ts";
import { fixtureDir, loadReference } from "./helpers/reference.ts";

const be = new CpuBackend();
const quiet = () => {};

// Overlap scheduling is on by default; tests that compare with it off say so.
async function engineFor(name: string, o: Partial<EngineOptions> = {}): Promise<Engine> {
  return Engine.create(be, { modelDir: await fixtureDir(name), log: quiet, maxRunningRequests: 32, kvTokens: 8192, ...o });
}

const greedy = (maxTokens: number) => ({ maxTokens, temperature: 0, ignoreEos: true });

describe("greedy outputs", () => {
  test("match transformers' continuations up to near-ties (all three architectures)", async () => {
    for (const name of ["tiny-qwen3", "tiny-llama", "tiny-qwen2"]) {
      const engine = await engineFor(name);
      const ref = await loadReference(name, engine.model.config.vocabSize);
      ref.prompts.forEach((p, i) => expect(engine.add(i, p.ids, greedy(32))).toBeNull());
      const out = runToEnd(engine);
      ref.prompts.forEach((p, i) => {
        const tol = 0.0075 * (p.last_logit_max - p.last_logit_min);
        const firstTie = p.greedy_margins.findIndex((m) => m < tol);
        const n = firstTie === -1 ? 32 : firstTie + 1;
        expect(out.get(i)!.tokens.slice(0, n)).toEqual(p.greedy.slice(0, n));
        expect(out.get(i)!.finish).toBe("length");
      });
      expect(expectIdleInvariants(engine)).toEqual([]);
      engine.close();
    }
  }, 60_000);

  // 32 requests: the reference prompts and prefixes of them (shared prefixes exercise the radix cache).
  async function workload(): Promise<number[][]> {
    const ref = await loadReference("tiny-qwen3", 151936);
    const long = ref.prompts[2].ids;
    const prompts = ref.prompts.map((p) => p.ids);
    for (let i = 0; prompts.length < 32; i++) prompts.push(long.slice(0, 5 + ((i * 37) % (long.length - 5))));
    return prompts;
  }

  async function outputsWith(o: Partial<EngineOptions>, oneAtATime = false): Promise<number[][]> {
    const engine = await engineFor("tiny-qwen3", o);
    const prompts = await workload();
    const results: number[][] = [];
    if (oneAtATime) {
      prompts.forEach((p, i) => {
        expect(engine.add(i, p, greedy(12))).toBeNull();
        results.push(runToEnd(engine).get(i)!.tokens);
      });
    } else {
      prompts.forEach((p, i) => expect(engine.add(i, p, greedy(12))).toBeNull());
      const out = runToEnd(engine);
      prompts.forEach((_, i) => results.push(out.get(i)!.tokens));
    }
    expect(expectIdleInvariants(engine)).toEqual([]);
    engine.close();
    return results;
  }

  test("are identical across prefill budgets, caches, page sizes and batching", async () => {
    const base = await outputsWith({});
    expect(base.every((t) => t.length === 12)).toBe(true);
    for (const o of [
      { maxPrefillLength: 8 }, { maxPrefillLength: 64 }, { maxPrefillLength: 8192 },
      { cache: "naive" as const }, { pageSize: 16 }, { pageSize: 16, maxPrefillLength: 8, cache: "radix" as const },
      { pageSize: 4, cache: "naive" as const },
    ]) {
      expect({ o, out: await outputsWith(o) }).toEqual({ o, out: base });
    }
    expect(await outputsWith({}, true)).toEqual(base);
    expect(await outputsWith({ overlap: false })).toEqual(base);
    expect(await outputsWith({ overlap: false, pageSize: 16, maxPrefillLength: 8 })).toEqual(base);
  }, 120_000);
});

describe("prefix cache", () => {
  test("a second request sharing a long prefix reports cached tokens and prefills fewer", async () => {
    const engine = await engineFor("tiny-qwen3");
    const ref = await loadReference("tiny-qwen3", 151936);
    const long = ref.prompts[2].ids;
    engine.add(1, long, greedy(2));
    const first = runToEnd(engine).get(1)!;
    expect(first.events[0].cachedTokens).toBe(0);
    engine.add(2, [...long.slice(0, 150), 11, 12, 13], greedy(2));
    let prefilled = 0;
    const s = engine.step();
    prefilled += s.stats.promptTokens;
    const second = runToEnd(engine).get(2);
    const cached = s.tokens.find((t) => t.uid === 2)?.cachedTokens ?? second?.events[0].cachedTokens;
    expect(cached).toBe(150);
    expect(prefilled).toBe(3);
    expect(expectIdleInvariants(engine)).toEqual([]);
  });
});

describe("KV pressure", () => {
  test("a workload needing several times the pool completes with nothing lost", async () => {
    const engine = await engineFor("tiny-qwen3", { kvTokens: 512, maxRunningRequests: 16, pageSize: 4 });
    const prompts = Array.from({ length: 40 }, (_, i) => Array.from({ length: 20 + (i % 7) * 9 }, (_, j) => 100 + ((i * 13 + j * 7) % 5000)));
    prompts.forEach((p, i) => expect(engine.add(i, p, greedy(40))).toBeNull());
    const needed = prompts.reduce((a, p) => a + p.length + 40, 0);
    expect(needed).toBeGreaterThan(4 * 512);
    let peak = 0;
    const out = runToEnd(engine, 100_000, () => (peak = Math.max(peak, engine.kv.pool.usedSlots)));
    expect(out.size).toBe(40);
    for (const o of out.values()) {
      expect(o.finish).toBe("length");
      expect(o.tokens.length).toBe(40);
    }
    expect(peak).toBeLessThanOrEqual(512);
    expect(expectIdleInvariants(engine)).toEqual([]);
  }, 60_000);

  test("a request that can never fit is rejected at once with the numbers", async () => {
    const engine = await engineFor("tiny-qwen3", { kvTokens: 256, maxSeqLen: 1024 });
    expect(engine.add(1, Array(200).fill(5), greedy(100))).toMatch(/needs more KV cache than the whole pool holds \(256 tokens\)/);
    expect(engine.add(2, Array(1000).fill(5), greedy(100))).toMatch(/1000 tokens.*100.*over the context length of 1024/);
    expect(engine.add(3, Array(10).fill(5), greedy(4))).toBeNull();
    expect(runToEnd(engine).get(3)!.tokens.length).toBe(4);
  });
});

describe("aborts", () => {
  test("queued and running requests end once with 'abort' and return their KV", async () => {
    const engine = await engineFor("tiny-qwen3", { maxRunningRequests: 2 });
    for (let i = 0; i < 4; i++) engine.add(i, [1, 2, 3, 4 + i], greedy(30));
    engine.step();
    engine.step();
    engine.abort(0); // running
    engine.abort(3); // queued
    const out = runToEnd(engine);
    expect(out.get(0)!.finish).toBe("abort");
    expect(out.get(3)!.finish).toBe("abort");
    expect(out.get(3)!.tokens.length).toBe(0);
    expect(out.get(1)!.finish).toBe("length");
    expect(out.get(2)!.tokens.length).toBe(30);
    expect(expectIdleInvariants(engine)).toEqual([]);
  });
});

describe("sampling through the engine", () => {
  test("n = 4 returns 4 samples that share the prompt's KV", async () => {
    const engine = await engineFor("tiny-qwen3");
    const prompt = Array.from({ length: 64 }, (_, i) => 1000 + i);
    expect(engine.add(100, prompt, { maxTokens: 8, temperature: 1, n: 4, seed: 7, ignoreEos: true })).toBeNull();
    const out = runToEnd(engine);
    expect([...out.keys()].sort()).toEqual([100, 101, 102, 103]);
    const cached = [101, 102, 103].map((u) => out.get(u)!.events[0].cachedTokens);
    expect(cached.every((c) => c >= 63)).toBe(true);
    expect(new Set([...out.values()].map((o) => o.tokens.join(","))).size).toBeGreaterThan(1);
    expect(expectIdleInvariants(engine)).toEqual([]);
  });

  test("a seed reproduces its sample whatever else is in the batch", async () => {
    const prompt = [5, 6, 7, 8, 9];
    const params = { maxTokens: 10, temperature: 1.2, topP: 0.95, seed: 1234, ignoreEos: true };
    const alone = await engineFor("tiny-qwen3");
    alone.add(1, prompt, params);
    const a = runToEnd(alone).get(1)!.tokens;
    const busy = await engineFor("tiny-qwen3");
    busy.add(7, [9, 9, 9], { maxTokens: 3, temperature: 1 });
    busy.add(1, prompt, params);
    busy.add(8, [1, 2, 3, 4, 5, 6, 7, 8, 9], { maxTokens: 12, temperature: 0.7 });
    expect(runToEnd(busy).get(1)!.tokens).toEqual(a);
  });

  test("overlap on and off give identical sampled outputs (seeds, penalties, n > 1, stop ids)", async () => {
    // A stop id the greedy continuation of [8, 9, 10] reaches at its 4th token, so the stop path runs.
    const probe = await engineFor("tiny-qwen3");
    probe.add(1, [8, 9, 10], greedy(4));
    const stopId = runToEnd(probe).get(1)!.tokens[3];
    const run = async (overlap: boolean) => {
      const engine = await engineFor("tiny-qwen3", { overlap, maxPrefillLength: 16 });
      const base = { maxTokens: 12, temperature: 0.8, topK: 40, seed: 5 };
      engine.add(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], { ...base, n: 3 });
      engine.add(10, [7, 7, 7], { ...base, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.5, seed: 6 });
      engine.add(11, [8, 9], { ...base, minTokens: 4, seed: 8, logitBias: { 42: 5 } });
      engine.add(12, [8, 9, 10], { ...greedy(20), stopTokenIds: [stopId] });
      const out = runToEnd(engine);
      expect(expectIdleInvariants(engine)).toEqual([]);
      return [...out.entries()].sort((a, b) => a[0] - b[0]).map(([uid, o]) => [uid, o.tokens, o.finish]);
    };
    const on = await run(true);
    expect(on.find(([uid]) => uid === 12)![2]).toBe("stop");
    expect(on).toEqual(await run(false));
  });

  test("minTokens keeps EOS away; stopTokenIds end with 'stop'", async () => {
    const engine = await engineFor("tiny-qwen3");
    const prompt = [5, 6, 7, 8];
    engine.add(1, prompt, greedy(3));
    const first = runToEnd(engine).get(1)!.tokens;
    engine.add(2, prompt, { ...greedy(10), ignoreEos: false, stopTokenIds: [first[1]] });
    const stopped = runToEnd(engine).get(2)!;
    expect(stopped.finish).toBe("stop");
    expect(stopped.tokens).toEqual(first.slice(0, first.indexOf(first[1]) + 1));
    engine.add(3, prompt, { ...greedy(10), ignoreEos: false, stopTokenIds: [first[1]], minTokens: 5 });
    const later = runToEnd(engine).get(3)!;
    expect(later.tokens.slice(0, 5)).not.toContain(first[1]);
  });
});

describe("bad input", () => {
  test("each bad request gets a clear error and the engine keeps serving the others", async () => {
    const engine = await engineFor("tiny-qwen3", { maxSeqLen: 512 });
    const cases: [unknown, RegExp][] = [
      [{ maxTokens: 0 }, /maxTokens/],
      [{ topP: 0 }, /topP/],
      [{ topP: 1.5 }, /topP/],
      [{ temperature: -1 }, /temperature/],
      [{ bogus: 1 }, /bogus: unknown sampling parameter/],
      [{ logitBias: { 999999999: 1 } }, /logitBias/],
    ];
    engine.add(1, [1, 2, 3], greedy(5));
    cases.forEach(([params, msg], i) => expect(engine.add(10 + i, [1, 2, 3], params as never)).toMatch(msg));
    expect(engine.add(20, [], greedy(5))).toMatch(/empty/);
    expect(engine.add(21, Array(600).fill(1), greedy(5))).toMatch(/context length of 512/);
    expect(engine.add(22, [1, -5], greedy(5))).toMatch(/token ids/);
    const out = runToEnd(engine);
    expect(out.get(1)!.tokens.length).toBe(5);
    expect(out.size).toBe(1);
  });
});

describe("logs", () => {
  test("the sampling defaults and SGLang-style prefill/decode batch lines are logged", async () => {
    const lines: string[] = [];
    const engine = await engineFor("tiny-qwen3", { log: (l) => lines.push(l) });
    engine.add(1, [1, 2, 3, 4, 5], greedy(3));
    runToEnd(engine);
    expect(lines[0]).toMatch(/^Sampling defaults \(generation_config\.json\): temperature=0\.6, topK=20, topP=0\.95/);
    expect(lines).toContain("Prefill batch. #new-seq: 1, #new-token: 5, #cached-token: 0, token usage: 0.00, #running-req: 1, #queue-req: 0");
    expect(lines.some((l) => /^Decode batch\. #running-req: 1, #token: \d+, token usage: [\d.]+, gen throughput \(token\/s\): [\d.]+, #queue-req: 0$/.test(l))).toBe(true);
  });
});
