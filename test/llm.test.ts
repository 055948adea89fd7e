// The offline API end to end: LLM → request ring → rank worker → engine → result ring → detokenizer.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { LLM } from "../src/index.ts";
import { fixtureDir, loadReference, type ModelReference } from "./helpers/reference.ts";

let llm: LLM;
let ref: ModelReference;

beforeAll(async () => {
  llm = await LLM.create({ model: await fixtureDir("tiny-qwen3"), maxPrefillLength: 64 });
  ref = await loadReference("tiny-qwen3", llm.info.vocabSize);
});

afterAll(async () => {
  await llm.close();
});

const greedy = { temperature: 0, ignoreEos: true };

test("greedy generation through the worker matches transformers up to near-ties", async () => {
  const out = await llm.generate(ref.prompts.map((p) => p.ids), { ...greedy, maxTokens: 32 });
  out.forEach((o, i) => {
    const p = ref.prompts[i];
    const tol = 0.0075 * (p.last_logit_max - p.last_logit_min);
    const firstTie = p.greedy_margins.findIndex((m) => m < tol);
    const n = firstTie === -1 ? 32 : firstTie + 1;
    expect(o.tokenIds.slice(0, n)).toEqual(p.greedy.slice(0, n));
    expect(o.finishReason).toBe("length");
    expect(o.promptTokens).toBe(p.ids.length);
  });
});

test("string prompts are tokenized as plain text and decoded back", async () => {
  const [o] = await llm.generate([ref.prompts[0].text], { ...greedy, maxTokens: 8 });
  const [byIds] = await llm.generate([ref.prompts[0].ids], { ...greedy, maxTokens: 8 });
  expect(o.tokenIds).toEqual(byIds.tokenIds);
  expect(o.text).toBe(await llm.tokenizer.decode(o.tokenIds));
});

test("a stop string split across tokens is caught and trimmed", async () => {
  const [full] = await llm.generate([ref.prompts[1].ids], { ...greedy, maxTokens: 24 });
  // A stop string made of the end of one token's text and the start of the next one's.
  let stop = "";
  let before = "";
  for (let i = 2; i < full.tokenIds.length - 1 && !stop; i++) {
    const a = await llm.tokenizer.decode(full.tokenIds.slice(0, i));
    const b = await llm.tokenizer.decode(full.tokenIds.slice(0, i + 1));
    const tail = a.slice(-2);
    const head = b.slice(a.length, a.length + 2);
    if (tail.length === 2 && head.length === 2 && !a.slice(0, -2).includes(tail + head) && !/\uFFFD/.test(tail + head)) {
      stop = tail + head;
      before = a.slice(0, -2);
    }
  }
  expect(stop.length).toBe(4);
  const [o] = await llm.generate([ref.prompts[1].ids], { ...greedy, maxTokens: 24, stop: [stop, "never-appears"] });
  expect(o.finishReason).toBe("stop");
  expect(o.text).toBe(before);
  expect(o.tokenIds.length).toBeLessThan(full.tokenIds.length);
});

test("n = 4 returns 4 samples; the later ones reuse the prompt's KV", async () => {
  const [o] = await llm.generate([ref.prompts[2].ids], { maxTokens: 6, temperature: 1, n: 4, seed: 11, ignoreEos: true });
  expect(o.samples.length).toBe(4);
  for (const s of o.samples) expect(s.tokenIds.length).toBe(6);
  expect(o.cachedTokens).toBeGreaterThan(ref.prompts[2].ids.length - 2);
});

test("same seed, same output, in a different batch", async () => {
  const params = { maxTokens: 10, temperature: 0.9, topK: 50, seed: 99, ignoreEos: true };
  const [alone] = await llm.generate([ref.prompts[0].ids], params);
  const mixed = await llm.generate([ref.prompts[1].ids, ref.prompts[0].ids, ref.prompts[2].ids],
    [{ ...params, seed: 1 }, params, { ...params, seed: 2 }]);
  expect(mixed[1].tokenIds).toEqual(alone.tokenIds);
});

test("logprobs and top logprobs come back per token", async () => {
  const [o] = await llm.generate([ref.prompts[0].ids], { ...greedy, maxTokens: 3, logprobs: true, topLogprobs: 3 });
  expect(o.logprobs!.length).toBe(3);
  for (const lp of o.logprobs!) {
    expect(lp.top.length).toBe(3);
    expect(lp.top[0].token).toBe(lp.token); // greedy picks the most likely token
    expect(lp.logprob).toBeCloseTo(lp.top[0].logprob, 5);
    expect(lp.logprob).toBeLessThanOrEqual(0);
  }
});

test("bad input: invalid params throw naming the prompt; impossible lengths end with an error", async () => {
  await expect(llm.generate([[1, 2]], { topP: 0 })).rejects.toThrow(/prompt 0: topP/);
  await expect(llm.generate([[1, 2]], { maxTokens: -1 })).rejects.toThrow(/maxTokens/);
  await expect(llm.generate([[1, 2]], { unknownField: 1 } as never)).rejects.toThrow(/unknownField/);
  const [tooLong, fine] = await llm.generate([[1, 2, 3], [4, 5, 6]], [{ maxTokens: 5000 }, { ...greedy, maxTokens: 2 }]);
  expect(tooLong.finishReason).toBe("error");
  expect(tooLong.error).toMatch(/context length of 4096/);
  expect(fine.tokenIds.length).toBe(2);
  const [empty] = await llm.generate([[]], greedy);
  expect(empty.error).toMatch(/empty/);
});
