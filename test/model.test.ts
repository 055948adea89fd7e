// Whole-model CPU forward against transformers (float32 from the same bf16 weights), and the
// consistency of the prefill, chunked-extend and decode paths.
import { afterAll, describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu.ts";
import { loadModel, type LoadedModel } from "../src/model/load.ts";
import { argmax, SingleSequence } from "../src/model/sequence.ts";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";
import { fixtureDir, loadReference, maxAbsDiff, type ModelReference } from "./helpers/reference.ts";

// Logit tolerance relative to the reference's last-position logit range (max − min). Our forward rounds
// activations to bf16 where the GPU kernels do; the reference stays in float32 throughout.
const RELATIVE_TOLERANCE = 0.0075;
// Two paths through our own forward (one prefill vs chunks vs decode) differ only by summation order.
const PATH_TOLERANCE = 0.02;

const backend = new CpuBackend();
const MODELS = ["tiny-qwen3", "tiny-llama", "tiny-qwen2"] as const;
const loaded = new Map<string, { m: LoadedModel; ref: ModelReference; tokenizer: TextTokenizer }>();

async function setup(name: string) {
  let entry = loaded.get(name);
  if (!entry) {
    const dir = await fixtureDir(name);
    const m = loadModel(backend, { modelDir: dir, maxTokens: 512, maxLogitRows: 512, maxSeqLen: 1024 });
    const ref = await loadReference(name, m.config.vocabSize);
    entry = { m, ref, tokenizer: await TextTokenizer.load(dir) };
    loaded.set(name, entry);
  }
  return entry;
}

function withSequence<T>(m: LoadedModel, fn: (s: SingleSequence) => T): T {
  const s = new SingleSequence(backend, m.model, 1024);
  try {
    return fn(s);
  } finally {
    s.free();
  }
}

afterAll(() => {
  for (const { m } of loaded.values()) m.model.free();
});

for (const name of MODELS) {
  describe(name, () => {
    test("our tokenizer gives transformers' prompt ids", async () => {
      const { ref, tokenizer } = await setup(name);
      for (const p of ref.prompts) expect(await tokenizer.encode(p.text)).toEqual(p.ids);
      expect(ref.prompts.some((p) => p.ids.length >= 200)).toBe(true);
    }, 60_000);

    test("last-position logits match transformers", async () => {
      const { m, ref } = await setup(name);
      ref.prompts.forEach((p, i) => {
        const logits = withSequence(m, (s) => s.feed(p.ids)[0]);
        const range = p.last_logit_max - p.last_logit_min;
        const err = maxAbsDiff(logits, ref.lastLogits[i]);
        console.log(`${name} prompt ${i} (${p.ids.length} tokens): max |Δlogit| ${err.toFixed(4)} = ` +
          `${((100 * err) / range).toFixed(2)}% of the range ${range.toFixed(2)}`);
        expect(err / range).toBeLessThan(RELATIVE_TOLERANCE);
      });
    }, 60_000);

    test("top-k at every position matches transformers", async () => {
      const { m, ref } = await setup(name);
      for (const p of ref.prompts) {
        const rows = withSequence(m, (s) => s.feed(p.ids, true));
        const tol = RELATIVE_TOLERANCE * (p.last_logit_max - p.last_logit_min);
        rows.forEach((row, t) => {
          p.topk_ids[t].forEach((id, j) => expect(Math.abs(row[id] - p.topk_values[t][j])).toBeLessThan(tol));
          // Our top-1 is the reference's unless its top-2 margin is within tolerance.
          if (p.topk_values[t][0] - p.topk_values[t][1] > tol) expect(argmax(row)).toBe(p.topk_ids[t][0]);
        });
      }
    }, 60_000);

      test("greedy continuation (prefill + decode) matches transformers up to near-ties", async () => {
      const { m, ref } = await setup(name);
      let compared = 0;
      for (const p of ref.prompts) {
        const tol = RELATIVE_TOLERANCE * (p.last_logit_max - p.last_logit_min);
        const ours = withSequence(m, (s) => {
          const out = [argmax(s.feed(p.ids)[0])];
          while (out.length < p.greedy.length) out.push(argmax(s.feed([out[out.length - 1]])[0]));
          return out;
        });
        // Identical up to and including the first step whose reference top-2 margin is below tolerance.
        const firstTie = p.greedy_margins.findIndex((margin) => margin < tol);
        const comparable = firstTie === -1 ? p.greedy.length : firstTie + 1;
        expect(ours.slice(0, comparable)).toEqual(p.greedy.slice(0, comparable));
        compared += comparable;
      }
      console.log(`${name}: free-running greedy compared over ${compared} of ${ref.prompts.length * 32} steps`);
    }, 60_000);

    test("decode along the reference continuation picks transformers' token at every clear step", async () => {
      const { m, ref } = await setup(name);
      let compared = 0;
      for (const p of ref.prompts) {
        const tol = RELATIVE_TOLERANCE * (p.last_logit_max - p.last_logit_min);
        const picks = withSequence(m, (s) => {
          const out = [argmax(s.feed(p.ids)[0])];
          for (const token of p.greedy.slice(0, -1)) out.push(argmax(s.feed([token])[0]));
          return out;
        });
        p.greedy.forEach((token, step) => {
          if (p.greedy_margins[step] < tol) return;
          expect(picks[step]).toBe(token);
          compared++;
        });
      }
      console.log(`${name}: teacher-forced decode compared at ${compared} of ${ref.prompts.length * 32} steps`);
      expect(compared).toBeGreaterThanOrEqual(48); // the fixtures must give logits wide enough to compare
    }, 60_000);

    test("one prefill, chunks of 3 + 5 + rest, and token-by-token decode agree", async () => {
      const { m, ref } = await setup(name);
      const ids = ref.prompts[2].ids;
      const range = ref.prompts[2].last_logit_max - ref.prompts[2].last_logit_min;
      const whole = withSequence(m, (s) => s.feed(ids, true));
      const chunked = withSequence(m, (s) => [...s.feed(ids.slice(0, 3), true), ...s.feed(ids.slice(3, 8), true),
        ...s.feed(ids.slice(8), true)]);
      const stepwise = withSequence(m, (s) => ids.map((id) => s.feed([id])[0]));
      for (let t = 0; t < ids.length; t++) {
        expect(maxAbsDiff(chunked[t], whole[t]) / range).toBeLessThan(PATH_TOLERANCE);
        expect(maxAbsDiff(stepwise[t], whole[t]) / range).toBeLessThan(PATH_TOLERANCE);
      }
    }, 60_000);
  });
}
