import { describe, expect, test } from "bun:test";
import { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from "../src/engine/sampling_params.ts";
import {
  decodeRecord,
  decodeRequest,
  decodeResult,
  encodeAbort,
  encodeFlush,
  encodeFlushDone,
  encodeMessage,
  encodeNewRequest,
  encodeRequestError,
  encodeShutdown,
  encodeStepResults,
  Finish,
  type Message,
  type StepStats,
  type TokenResult,
} from "../src/ipc/messages.ts";
import { SharedRing } from "../src/ipc/ring.ts";
import type { EchoWorkerInit } from "./helpers/ring_echo_worker.ts";
import { rng as mulberry32 } from "./helpers/rng.ts";


/** A record whose every word depends on its sequence number, so any mix-up shows. */
function makeRecord(seq: number, length: number): Int32Array {
  const r = new Int32Array(length);
  for (let i = 0; i < length; i++) r[i] = i === 0 ? seq : Math.imul(seq + 1, 2654435761) ^ i;
  return r;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

describe("SharedRing", () => {
  test("attach sees the same ring; foreign buffers are refused", () => {
    const a = SharedRing.create(32);
    const b = SharedRing.attach(a.buffer);
    expect(b.capacityWords).toBe(32);
    expect(a.tryWrite([7, 8, 9])).toBe(true);
    expect(Array.from(b.read()!)).toEqual([7, 8, 9]);
    expect(a.isEmpty).toBe(true);
    expect(() => SharedRing.attach(new SharedArrayBuffer(1024))).toThrow(/not made by SharedRing/);
    expect(() => SharedRing.create(1)).toThrow(RangeError);
  });

  test("randomized variable-length records wrap around many times without loss or corruption", () => {
    const rand = mulberry32(12345);
    const ring = SharedRing.create(61); // odd size: records start and split at every offset
    const model: Int32Array[] = [];
    let seq = 0;
    let read = 0;
    let rejected = 0;
    let wordsThrough = 0;
    for (let op = 0; op < 40_000; op++) {
      if (rand() < 0.55) {
        const batch = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => makeRecord(seq++, Math.floor(rand() * 24)));
        let fit = 0;
        let free = ring.freeWords;
        while (fit < batch.length && batch[fit].length + 1 <= free) free -= batch[fit++].length + 1;
        // Plain arrays take the element-by-element path, typed arrays the memcpy path.
        const written =
          batch.length === 1 ? Number(ring.tryWrite(rand() < 0.5 ? Array.from(batch[0]) : batch[0])) : ring.writeMany(batch);
        expect(written).toBe(fit);
        model.push(...batch.slice(0, written));
        seq -= batch.length - written;
        rejected += batch.length - written;
      } else {
        const got = ring.read();
        const want = model.shift();
        if (want === undefined) expect(got).toBeNull();
        else {
          expect(got).toEqual(want);
          wordsThrough += want.length + 1;
          read++;
        }
      }
    }
    for (let got = ring.read(); got !== null; got = ring.read()) expect(got).toEqual(model.shift()!);
    expect(model.length).toBe(0);
    expect(read).toBeGreaterThan(10_000);
    expect(rejected).toBeGreaterThan(100);
    expect(wordsThrough / 61).toBeGreaterThan(1000);
  });

  test("a full ring refuses writes and keeps what it holds intact", () => {
    const ring = SharedRing.create(100);
    const written: Int32Array[] = [];
    for (let seq = 0; ; seq++) {
      const rec = makeRecord(seq, 7);
      if (!ring.tryWrite(rec)) break;
      written.push(rec);
    }
    expect(written.length).toBe(12); // 12 × 8 words; 99 usable
    expect(ring.freeWords).toBe(3);
    expect(ring.tryWrite([1, 2, 3])).toBe(false);
    expect(ring.tryWrite([1, 2])).toBe(true);
    expect(ring.tryWrite([])).toBe(false);
    expect(ring.writeMany([[1], [2]])).toBe(0);
    for (const want of written) expect(ring.read()).toEqual(want);
    expect(Array.from(ring.read()!)).toEqual([1, 2]);
    expect(ring.read()).toBeNull();
    expect(ring.tryWrite(makeRecord(99, 98))).toBe(true); // largest record (capacity - 2), across the wrap
    expect(ring.read()).toEqual(makeRecord(99, 98));
    expect(() => ring.tryWrite(new Int32Array(99))).toThrow(RangeError);
    expect(() => ring.writeMany([[1], new Int32Array(99)])).toThrow(RangeError);
    expect(ring.isEmpty).toBe(true); // the batch was refused whole
  });

  test("an empty record is distinct from an empty ring", () => {
    const ring = SharedRing.create(8);
    expect(ring.tryWrite([])).toBe(true);
    expect(ring.isEmpty).toBe(false);
    expect(ring.read()).toEqual(new Int32Array(0));
    expect(ring.read()).toBeNull();
  });

  test("after close: written records stay readable, then waits answer closed and writes throw", async () => {
    const ring = SharedRing.create(64);
    ring.writeMany([[1], [2, 2], [3, 3, 3]]);
    ring.close();
    expect(ring.closed).toBe(true);
    expect(SharedRing.attach(ring.buffer).closed).toBe(true);
    expect(() => ring.tryWrite([4])).toThrow(/closed/);
    expect(ring.waitForData(1000)).toBe("ok");
    expect(await ring.waitForDataAsync(1000)).toBe("ok");
    expect(Array.from(ring.read()!)).toEqual([1]);
    expect(Array.from(ring.read()!)).toEqual([2, 2]);
    expect(Array.from(ring.read()!)).toEqual([3, 3, 3]);
    expect(ring.read()).toBeNull();
    expect(ring.waitForData(1000)).toBe("closed");
    expect(await ring.waitForDataAsync(1000)).toBe("closed");
  });

  test("waits time out on an empty ring", async () => {
    const ring = SharedRing.create(16);
    let t = performance.now();
    expect(ring.waitForData(20)).toBe("timed-out");
    expect(performance.now() - t).toBeGreaterThanOrEqual(19);
    t = performance.now();
    expect(await ring.waitForDataAsync(20)).toBe("timed-out");
    expect(performance.now() - t).toBeGreaterThanOrEqual(19);
    expect(ring.waitForData(0)).toBe("timed-out");
  });

  test("notify and close wake an async waiter; a write without notify does not", async () => {
    const ring = SharedRing.create(16);
    const sleep = (ms: number) => new Promise<"still waiting">((r) => setTimeout(() => r("still waiting"), ms));
    const waiting = ring.waitForDataAsync(10_000);
    setTimeout(() => ring.tryWrite([5]), 5);
    expect(await Promise.race([waiting, sleep(50)])).toBe("still waiting"); // data is there, nobody was woken
    ring.notify();
    expect(await withTimeout(waiting, 5_000, "notify")).toBe("ok");
    expect(ring.read()).toEqual(Int32Array.of(5));

    setTimeout(() => {
      ring.tryWrite([6]);
      ring.notify();
    }, 5);
    expect(await ring.waitForDataAsync(10_000)).toBe("ok");
    expect(ring.read()).toEqual(Int32Array.of(6));

    setTimeout(() => ring.close(), 5);
    const t = performance.now();
    expect(await ring.waitForDataAsync(Infinity)).toBe("closed");
    expect(performance.now() - t).toBeLessThan(5_000);
  });
});

interface EchoWorker {
  requests: SharedRing;
  results: SharedRing;
  exited: Promise<number>;
}

async function startEchoWorker(capacityWords: number, spinUs: number): Promise<EchoWorker> {
  const requests = SharedRing.create(capacityWords);
  const results = SharedRing.create(capacityWords);
  const worker = new Worker(new URL("./helpers/ring_echo_worker.ts", import.meta.url));
  const exited = new Promise<number>((resolve) => worker.addEventListener("close", (e) => resolve((e as CloseEvent).code)));
  const ready = new Promise((resolve) => worker.addEventListener("message", resolve, { once: true }));
  const init: EchoWorkerInit = { requests: requests.buffer, results: results.buffer, spinUs };
  worker.postMessage(init);
  await withTimeout(ready, 10_000, "echo worker start");
  return { requests, results, exited };
}

/** Closes the request ring and waits for the worker to close the result ring and exit on its own. */
async function shutDown(w: EchoWorker): Promise<void> {
  w.requests.close();
  expect(await withTimeout(w.results.waitForDataAsync(Infinity), 5_000, "result ring close")).toBe("closed");
  await withTimeout(w.exited, 5_000, "worker exit");
}

describe("SharedRing across a Worker", () => {
  test("thousands of records echo through two small rings in order, none lost, then a cooperative shutdown", async () => {
    const w = await startEchoWorker(1024, 5);
    const rand = mulberry32(777);
    const total = 20_000;
    const sent = Array.from({ length: total }, (_, seq) => makeRecord(seq, 1 + Math.floor(rand() * 64)));
    let next = 0;
    let received = 0;
    let awaited = 0;
    while (received < total) {
      if (next < total) {
        const n = w.requests.writeMany(sent.slice(next, next + 32));
        next += n;
        if (n > 0) w.requests.notify();
      }
      let drained = 0;
      for (let rec = w.results.read(); rec !== null; rec = w.results.read()) {
        expect(rec).toEqual(sent[received++]);
        drained++;
      }
      if (drained === 0) {
        awaited++;
        expect(await withTimeout(w.results.waitForDataAsync(next < total ? 1 : 5_000), 10_000, "echo")).not.toBe("closed");
      }
    }
    expect(received).toBe(total);
    expect(awaited).toBeGreaterThan(0);
    // The worker is now asleep in Atomics.wait with a 60 s timeout: close() must wake it.
    await new Promise((r) => setTimeout(r, 20));
    const t = performance.now();
    await shutDown(w);
    expect(performance.now() - t).toBeLessThan(5_000);
    expect(w.results.read()).toBeNull();
  });

  test("round-trip wake-up latency (printed, not asserted)", async () => {
    const report: string[] = [];
    for (const spinUs of [5, 200]) {
      const w = await startEchoWorker(256, spinUs);
      const samples: number[] = [];
      for (let i = 0; i < 3_000; i++) {
        const t = performance.now();
        expect(w.requests.tryWrite([i])).toBe(true);
        w.requests.notify();
        while (w.results.isEmpty) await w.results.waitForDataAsync(1_000);
        samples.push(performance.now() - t);
        expect(w.results.read()).toEqual(Int32Array.of(i));
      }
      await shutDown(w);
      const sorted = samples.slice(200).sort((a, b) => a - b); // warm-up dropped
      const q = (at: number) => (sorted[Math.floor(at * (sorted.length - 1))] * 1000).toFixed(1);
      report.push(`worker spin ${spinUs} µs: p50 ${q(0.5)} µs, p90 ${q(0.9)} µs, p99 ${q(0.99)} µs, max ${q(1)} µs`);
    }
    console.log(`main → worker → main round trip (write+notify, Atomics.wait, echo, Atomics.waitAsync):\n  ${report.join("\n  ")}`);
  });
});

const f = Math.fround;

const fullParams: SamplingParams = {
  maxTokens: 2048,
  temperature: 0.7,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  seed: 0xffffffff,
  stop: ["</s>", "é", "你好", "🎉👍🏽", "\n\nUser:"], // 1–4-byte characters; every padding length 0–3
  stopTokenIds: [151645, 0, 151643],
  ignoreEos: true,
  presencePenalty: -0.3,
  frequencyPenalty: 1.1,
  repetitionPenalty: 1.05,
  logitBias: { 0: -100, 42: 0.1, 151000: 7.25 },
  minTokens: 3,
  n: 4,
  logprobs: true,
  topLogprobs: 20,
  skipSpecialTokens: false,
};

/** What the far side sees: float parameters pass through f32. */
function viaF32(p: SamplingParams): SamplingParams {
  return {
    ...p,
    temperature: f(p.temperature),
    topP: f(p.topP),
    minP: f(p.minP),
    presencePenalty: f(p.presencePenalty),
    frequencyPenalty: f(p.frequencyPenalty),
    repetitionPenalty: f(p.repetitionPenalty),
    logitBias: Object.fromEntries(Object.entries(p.logitBias).map(([id, b]) => [id, f(b)])),
  };
}

const stats: StepStats = {
  running: 3,
  queued: 17,
  kvUsed: 123_456,
  kvTotal: 500_000,
  cacheHitTokens: 64,
  promptTokens: 512,
  generatedTokens: 3,
};

const tokenResults: TokenResult[] = [
  { uid: 1, token: 9707, finish: Finish.none, cachedTokens: 64, logprob: NaN, topIds: [], topLogprobs: [] },
  { uid: 0xffffffff, token: 151645, finish: Finish.stop, cachedTokens: 0, logprob: -0.125, topIds: [151645, 11, 0], topLogprobs: [-0.125, -2.5, -1e-7] },
  { uid: 7, token: 13, finish: Finish.length, cachedTokens: 0, logprob: -3.3, topIds: [13], topLogprobs: [-3.3] },
  { uid: 8, token: -1, finish: Finish.abort, cachedTokens: 0, logprob: NaN, topIds: [], topLogprobs: [] },
  { uid: 9, token: -1, finish: Finish.error, cachedTokens: 0, logprob: NaN, topIds: [], topLogprobs: [] },
];

describe("messages", () => {
  test("NewRequest round-trips every parameter (floats through f32), unicode stops, logit bias", () => {
    const prompt = [151644, 872, 198, 0, 2_000_000_000];
    const m = decodeRequest(encodeNewRequest(0xfffffffe, prompt, fullParams));
    expect(m).toEqual({ kind: "newRequest", uid: 0xfffffffe, promptIds: Int32Array.from(prompt), params: viaF32(fullParams) });
    if (m.kind !== "newRequest") throw new Error("unreachable");
    expect(m.params.temperature).not.toBe(0.7); // documented: f32 transport
    expect(m.params.stop).toEqual(fullParams.stop);
    expect(Object.keys(m.params).sort()).toEqual(Object.keys(DEFAULT_SAMPLING_PARAMS).sort());
  });

  test("NewRequest with default parameters: empty prompt, no seed, empty lists, exact defaults", () => {
    const words = encodeNewRequest(0, new Int32Array(0), DEFAULT_SAMPLING_PARAMS);
    expect(words.length).toBe(19);
    const m = decodeRecord(words);
    expect(m).toEqual({ kind: "newRequest", uid: 0, promptIds: new Int32Array(0), params: { ...DEFAULT_SAMPLING_PARAMS } });
    const seeded = decodeRecord(encodeNewRequest(1, [5], { ...DEFAULT_SAMPLING_PARAMS, seed: 0 }));
    expect(seeded.kind === "newRequest" && seeded.params.seed).toBe(0);
  });

  test("Abort, Flush, Shutdown, FlushDone, RequestError round-trip", () => {
    const messages: Message[] = [
      { kind: "abort", uid: 0xffffffff },
      { kind: "flush", uid: 12 },
      { kind: "shutdown" },
      { kind: "flushDone", uid: 12, ok: true },
      { kind: "flushDone", uid: 13, ok: false },
      { kind: "requestError", uid: 5, message: "prompt of 40000 tokens exceeds the KV pool (32768) — 请缩短 🙏" },
      { kind: "requestError", uid: 6, message: "" },
    ];
    for (const m of messages) expect(decodeRecord(encodeMessage(m))).toEqual(m);
    expect(encodeAbort(3)).toEqual(Int32Array.of(2, 3));
    expect(encodeFlush(3)).toEqual(Int32Array.of(3, 3));
    expect(encodeShutdown()).toEqual(Int32Array.of(4));
    expect(encodeFlushDone(3, true)).toEqual(Int32Array.of(18, 3, 1));
    expect(encodeRequestError(1, "abcde").length).toBe(5);
  });

  test("StepResults round-trips stats and entries; NaN logprob; top logprobs through f32; empty step", () => {
    const m = decodeResult(encodeStepResults(stats, tokenResults));
    const want = tokenResults.map((r) => ({ ...r, logprob: f(r.logprob), topIds: Array.from(r.topIds), topLogprobs: Array.from(r.topLogprobs, f) }));
    expect(m).toEqual({ kind: "stepResults", stats, results: want });
    if (m.kind !== "stepResults") throw new Error("unreachable");
    expect(Number.isNaN(m.results[0].logprob)).toBe(true);
    expect(m.results[1].logprob).toBe(-0.125);
    expect(m.results[2].logprob).toBe(f(-3.3));
    expect(m.results.map((r) => r.finish)).toEqual([0, 1, 2, 3, 4]);
    expect(decodeResult(encodeStepResults(stats, []))).toEqual({ kind: "stepResults", stats, results: [] });
  });

  test("records survive a ring that splits them across its end", () => {
    const ring = SharedRing.create(67);
    const m1 = encodeNewRequest(1, [1, 2, 3], fullParams);
    const m2 = encodeStepResults(stats, tokenResults.slice(0, 2));
    for (let i = 0; i < 50; i++) {
      expect(ring.writeMany([m1, encodeAbort(i)])).toBe(2);
      expect(decodeRequest(ring.read()!)).toEqual(decodeRequest(m1));
      expect(decodeRequest(ring.read()!)).toEqual({ kind: "abort", uid: i });
      expect(ring.tryWrite(m2)).toBe(true);
      expect(decodeResult(ring.read()!)).toEqual(decodeResult(m2));
    }
  });

  test("malformed records and out-of-range fields are refused, not misread", () => {
    const req = encodeNewRequest(1, [1, 2], fullParams);
    expect(() => decodeRecord(req.subarray(0, req.length - 1))).toThrow(/truncated|trailing/);
    expect(() => decodeRecord(Int32Array.from([...req, 0]))).toThrow(/trailing/);
    expect(() => decodeRecord(Int32Array.of(99))).toThrow(/unknown record kind/);
    expect(() => decodeRecord(new Int32Array(0))).toThrow(/truncated/);
    expect(() => decodeResult(encodeAbort(1))).toThrow(/on the result ring/);
    expect(() => decodeRequest(encodeFlushDone(1, true))).toThrow(/on the request ring/);
    const badFinish = encodeStepResults(stats, tokenResults.slice(0, 1));
    badFinish[9 + 2] = 5;
    expect(() => decodeRecord(badFinish)).toThrow(/finish code/);
    expect(() => encodeAbort(-1)).toThrow(RangeError);
    expect(() => encodeAbort(2 ** 32)).toThrow(RangeError);
    expect(() => encodeNewRequest(1, [1.5], DEFAULT_SAMPLING_PARAMS)).toThrow(/promptIds/);
    expect(() => encodeNewRequest(1, [2 ** 31], DEFAULT_SAMPLING_PARAMS)).toThrow(/promptIds/);
    expect(() => encodeNewRequest(1, [1], { ...DEFAULT_SAMPLING_PARAMS, maxTokens: 2 ** 31 })).toThrow(/maxTokens/);
    const mismatched = { ...tokenResults[1], topLogprobs: [-1] };
    expect(() => encodeStepResults(stats, [mismatched])).toThrow(/differ in length/);
  });
});
