// The first five minutes: `bun run serve` with no flags but a free port serves the embedded default model
// (models/default) within 30 s and answers a chat completion in English. This test fails, rather than skips,
// while models/default is missing: the model is part of the repo.
//
// "English" is measured with a 275k-word dictionary (an-array-of-english-words, MIT): the share of the reply's
// words that it lists. The held-out split of the training text scores 96% as a whole and 82% or more for 95%
// of its documents (proper names such as Israel or Elizabeth and abbreviations such as Mr are not listed), while
// a randomly initialised model's reply is mostly glued sub-word pieces. 70% passes a small model writing
// English with some invented names and fails gibberish.
import { afterAll, beforeAll, expect, test } from "bun:test";
import words from "an-array-of-english-words";
import { join } from "node:path";
import { DEFAULT_MODEL_DIR } from "../src/default_model.ts";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";

const MIN_ENGLISH_SHARE = 0.7;
const ROOT = join(import.meta.dir, "..");
const dictionary = new Set(words as string[]);

/** The share of the words of `text` (letters, inner apostrophes split off) found in the dictionary. */
export function englishShare(text: string): { share: number; words: string[] } {
  const found = (text.match(/[A-Za-z]+(?:'[A-Za-z]+)*/g) ?? []).map((w) => w.split("'")[0].toLowerCase());
  return { share: found.length === 0 ? 0 : found.filter((w) => dictionary.has(w)).length / found.length, words: found };
}

let proc: ReturnType<typeof Bun.spawn> | null = null;
let url = "";
let output = "";
let readyMs = 0;

beforeAll(async () => {
  const t0 = performance.now();
  proc = Bun.spawn(["bun", "run", "serve", "--port", "0"], { cwd: ROOT, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk);
  };
  pump(proc.stdout as ReadableStream<Uint8Array>);
  pump(proc.stderr as ReadableStream<Uint8Array>);
  while (!/serving on (http:\/\/\S+)/.test(output)) {
    if (proc.exitCode !== null) throw new Error(`bun run serve exited with ${proc.exitCode} before serving:\n${output}`);
    if (performance.now() - t0 > 30_000) throw new Error(`bun run serve was not ready within 30 s:\n${output}`);
    await Bun.sleep(50);
  }
  readyMs = performance.now() - t0;
  url = /serving on (http:\/\/\S+)/.exec(output)![1];
}, 40_000);

afterAll(async () => {
  if (proc !== null && proc.exitCode === null) {
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  }
});

test("bun run serve with no flags is ready within 30 s, serving the embedded model", async () => {
  expect(readyMs).toBeLessThan(30_000);
  expect(output).toContain(DEFAULT_MODEL_DIR);
  const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
  expect(models.data.map((m) => m.id)).toEqual(["default"]);
});

test("a chat completion answers in English", async () => {
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "Tell me a story." }], max_tokens: 64, temperature: 0 }),
  });
  expect(r.status).toBe(200);
  const body = (await r.json()) as { choices: { message: { content: string } }[] };
  const reply = body.choices[0].message.content;
  const { share, words: found } = englishShare(reply);
  console.log(`reply (${(100 * share).toFixed(0)}% dictionary words): ${reply}`);
  expect(found.length).toBeGreaterThanOrEqual(8);
  expect(new Set(found).size).toBeGreaterThanOrEqual(5);
  expect(share).toBeGreaterThanOrEqual(MIN_ENGLISH_SHARE);
});

test("the chat template renders as the training data was rendered", async () => {
  const tok = await TextTokenizer.load(DEFAULT_MODEL_DIR);
  const messages = [{ role: "system", content: "S" }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }];
  expect(tok.applyChatTemplate(messages)).toBe("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n");
  expect(tok.applyChatTemplate(messages.slice(0, 2), { addGenerationPrompt: true })).toEndWith("<|im_start|>assistant\n");
  expect(await tok.encode("<|im_start|>user\nHi<|im_end|>")).toEqual([1, ...(await tok.encode("user\nHi")), 2]);
  expect(tok.eosTokenIds).toContain(2);
});

test("the English measure tells English from gibberish", () => {
  expect(englishShare("It was a bright cold day in April, and the clocks were striking thirteen.").share).toBeGreaterThan(0.9);
  expect(englishShare("thelandmentous faker('$ vrostal [W[W[W quenth").share).toBeLessThan(MIN_ENGLISH_SHARE);
});
