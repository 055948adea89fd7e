// A real `bun run serve` process on 127.0.0.1: the official openai client, raw HTTP for every endpoint and
// error case, cancellation, concurrency, API keys and graceful shutdown.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { fixtureDir } from "./helpers/reference.ts";
import { startServe, type ServerProcess } from "./helpers/server_process.ts";

let server: ServerProcess;
let model: string;
let client: OpenAI;

beforeAll(async () => {
  model = await fixtureDir("tiny-qwen3");
  server = await startServe(["--model", model, "--served-model-name", "tiny", "--max-seq-len-override", "1024"], {
    MINISGL_LOG_INTERVAL_MS: "60000",
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused" });
}, 60_000);

afterAll(async () => {
  expect(await server.stop()).toBe(0);
});

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(server.url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });

const json = async (r: Response | Promise<Response>): Promise<any> => (await r).json();

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const m = new RegExp(`^${name.replace(/[:.]/g, "\\$&")}\\{[^}]*\\} ([\\d.e+-]+)$`, "m").exec(text);
  if (!m) throw new Error(`metric ${name} missing`);
  return Number(m[1]);
}

describe("openai client", () => {
  test("chat and completions, streaming and not, with usage", async () => {
    const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 5, temperature: 0 });
    expect(chat.object).toBe("chat.completion");
    expect(chat.choices[0].message.role).toBe("assistant");
    expect(chat.choices[0].finish_reason).toBe("length");
    expect(chat.usage!.completion_tokens).toBe(5);
    const stream = await client.chat.completions.create({
      model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 5, temperature: 0, stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content ?? "";
        finish = c.finish_reason ?? finish;
      }
    }
    expect(text).toBe(chat.choices[0].message.content!);
    expect(finish).toBe("length");
    expect(usage!.completion_tokens).toBe(5);
    expect((usage as { prompt_tokens_details?: { cached_tokens: number } }).prompt_tokens_details!.cached_tokens).toBeGreaterThan(0);

    const completion = await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 6, temperature: 0 });
    expect(completion.object).toBe("text_completion");
    expect(completion.usage!.prompt_tokens).toBe(4);
    let streamed = "";
    for await (const chunk of await client.completions.create({ model: "tiny", prompt: "Once upon a time", max_tokens: 6, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.text ?? "";
    }
    expect(streamed).toBe(completion.choices[0].text);
  });

  test("n = 2, seed reproducibility, stop and logprobs", async () => {
    const two = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Tell me" }], max_tokens: 4, n: 2, seed: 3 });
    expect(two.choices.map((c) => c.index)).toEqual([0, 1]);
    const again = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Tell me" }], max_tokens: 4, n: 2, seed: 3 });
    expect(again.choices.map((c) => c.message.content)).toEqual(two.choices.map((c) => c.message.content));
    const full = await client.completions.create({ model: "tiny", prompt: "Hello there", max_tokens: 8, temperature: 0 });
    const word = full.choices[0].text.slice(3, 6);
    const stopped = await client.completions.create({ model: "tiny", prompt: "Hello there", max_tokens: 8, temperature: 0, stop: [word] });
    expect(stopped.choices[0].finish_reason).toBe("stop");
    expect(stopped.choices[0].text).toBe(full.choices[0].text.slice(0, full.choices[0].text.indexOf(word)));
    const lp = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
    expect(lp.choices[0].logprobs!.content!.length).toBe(3);
    expect(lp.choices[0].logprobs!.content![0].top_logprobs.length).toBe(2);
  });
});

describe("raw HTTP", () => {
  test("models, health, tokenize/detokenize, generate, metrics", async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const models = await json(fetch(`${server.url}/v1/models`));
    expect(models.data[0]).toMatchObject({ id: "tiny", object: "model", max_model_len: 1024 });
    expect((await fetch(`${server.url}/v1/models/tiny`)).status).toBe(200);
    const missing = await fetch(`${server.url}/v1/models/other`);
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.code).toBe("model_not_found");
    const tok = await json(post("/v1/tokenize", { prompt: "Hello world" }));
    expect(tok).toEqual({ tokens: [9707, 1879], count: 2, max_model_len: 1024 });
    expect(await json(post("/v1/detokenize", { tokens: [9707, 1879] }))).toEqual({ prompt: "Hello world" });
    const gen = await json(post("/generate", { text: "Hello", sampling_params: { max_new_tokens: 3, temperature: 0 } }));
    expect(gen.meta_info).toMatchObject({ prompt_tokens: 1, completion_tokens: 3, finish_reason: { type: "length" } });
    const text = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "sglang:cache_hit_rate",
      "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
      "vllm:inter_token_latency_seconds_count", "vllm:e2e_request_latency_seconds_sum"]) expect(text).toContain(name);
  });

  test("every error is OpenAI-shaped with the right status", async () => {
    const cases: [string, unknown, number, RegExp, string | null][] = [
      ["/v1/chat/completions", "{not json", 400, /not valid JSON/, null],
      ["/v1/chat/completions", { messages: "hi" }, 400, /messages/, "messages"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], temperature: "hot" }, 400, /temperature/, "temperature"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], n: 100000 }, 400, /n:/, "n"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], max_tokens: 10 ** 9 }, 400, /maximum context length is 1024.*in the prompt/, "max_tokens"],
      ["/v1/completions", { prompt: "x", max_tokens: 0 }, 400, /max_tokens/, "max_tokens"],
      ["/v1/completions", { prompt: "x", top_p: 2 }, 400, /top_p/, "top_p"],
      ["/v1/completions", { prompt: 42 }, 400, /prompt/, "prompt"],
      ["/v1/completions", { prompt: "x", model: "gpt-4" }, 404, /does not exist/, "model"],
      ["/v1/nothing", {}, 404, /no such route/, null],
    ];
    for (const [path, request, status, message, param] of cases) {
      const r = await post(path, request);
      const body = await json(r);
      expect({ path, request, status: r.status }).toEqual({ path, request, status });
      expect(body.error.message).toMatch(message);
      expect(body.error.param).toBe(param);
      expect(typeof body.error.type).toBe("string");
      expect(JSON.stringify(body)).not.toContain("{not json");
    }
    const huge = await post("/v1/completions", { prompt: "x".repeat(9 * 1024 * 1024) });
    expect(huge.status).toBe(413);
    expect((await json(huge)).error.message).toMatch(/over/);
  });

  test("unknown fields are accepted and ignored", async () => {
    const r = await post("/v1/completions", { prompt: "Hi", max_tokens: 2, user: "me", some_future_field: { a: 1 } });
    expect(r.status).toBe(200);
  });
});

describe("load", () => {
  test("50 streams with half cancelled: aborted in the engine, KV returned, the rest complete", async () => {
    const run = async (i: number) => {
      const ac = new AbortController();
      const r = await fetch(`${server.url}/v1/completions`, {
        method: "POST", headers: { "content-type": "application/json" }, signal: ac.signal,
        body: JSON.stringify({ prompt: `Story number ${i}:`, max_tokens: 40, temperature: 0.8, seed: i, stream: true, ignore_eos: true }),
      });
      const reader = r.body!.getReader();
      const decoder = new TextDecoder();
      let text = "";
      let chunks = 0;
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value);
        chunks = text.split("\n\n").filter((c) => c.startsWith("data: {")).length;
        if (i % 2 === 0 && chunks >= 3) {
          ac.abort();
          return { cancelled: true, tokens: chunks };
        }
      }
      const finishes = text.split("\n\n").filter((c) => c.startsWith("data: {")).map((c) => JSON.parse(c.slice(6)).choices[0]);
      expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
      return { cancelled: false, tokens: finishes.filter((c) => c.text !== "" || c.finish_reason).length, finish: finishes.at(-1).finish_reason };
    };
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => run(i).catch((e) => ({ cancelled: true, tokens: 0, error: String(e) }))));
    for (const [i, r] of results.entries()) {
      if (i % 2 === 1) expect(r).toMatchObject({ cancelled: false, finish: "length" });
    }
    // Aborted requests leave the engine within a step or two; then nothing is live and the cache can be flushed.
    for (let t = 0; t < 100 && (await metric("minisgl:num_requests_live")) > 0; t++) await Bun.sleep(50);
    expect(await metric("minisgl:num_requests_live")).toBe(0);
    expect((await post("/flush_cache", {})).status).toBe(200);
    expect(await metric("minisgl:kv_cache_used_slots")).toBe(0);
  }, 120_000);

  test("200 concurrent streaming requests all complete", async () => {
    const one = async (i: number) => {
      const r = await post("/v1/chat/completions", { messages: [{ role: "user", content: `q${i}` }], max_tokens: 8, ignore_eos: true, stream: true });
      const text = await r.text();
      const chunks = text.split("\n\n").filter((c) => c.startsWith("data: {")).map((c) => JSON.parse(c.slice(6)));
      return chunks.at(-1).choices[0].finish_reason;
    };
    const finishes = await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
    expect(finishes.every((f) => f === "length")).toBe(true);
  }, 120_000);

  test("flush_cache refuses while requests run", async () => {
    // Streamed, so the flush goes out while the request is certainly running (a GPU finishes 400 tokens fast).
    const pending = await post("/v1/completions", { prompt: "Long one", max_tokens: 900, ignore_eos: true, temperature: 0, stream: true });
    const reader = pending.body!.getReader();
    await reader.read();
    const r = await post("/flush_cache", {});
    expect(r.status).toBe(400);
    expect((await json(r)).error.code).toBe("requests_running");
    while (!(await reader.read()).done);
    expect(pending.status).toBe(200);
  }, 60_000);
});

describe("separate server processes", () => {
  test("--api-key: 401 without or with a wrong key, /health stays public", async () => {
    const s = await startServe(["--model", model, "--api-key", "00123"]);
    try {
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
      const no = await fetch(`${s.url}/v1/models`);
      expect(no.status).toBe(401);
      expect((await json(no)).error.type).toBe("authentication_error");
      expect((await fetch(`${s.url}/v1/models`, { headers: { authorization: "Bearer 123" } })).status).toBe(401);
      expect((await fetch(`${s.url}/v1/models`, { headers: { authorization: "Bearer 00123" } })).status).toBe(200);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  }, 60_000);

  test("SIGTERM ends in-flight streams with a final event and exits 0", async () => {
    const s = await startServe(["--model", model]);
    const r = await fetch(`${s.url}/v1/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Go", max_tokens: 3000, ignore_eos: true, stream: true }),
    });
    const reader = r.body!.getReader();
    await reader.read();
    const exited = s.stop("SIGTERM");
    let text = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value);
    expect(text).toContain('"finish_reason":"abort"');
    expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(await exited).toBe(0);
  }, 60_000);

  test("a full queue answers 503 with Retry-After", async () => {
    const s = await startServe(["--model", model, "--max-queued-requests", "1"]);
    try {
      // Streamed: once its first chunk is here the long request is certainly still running (even on a GPU).
      const long = await fetch(`${s.url}/v1/completions`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "Go", max_tokens: 900, ignore_eos: true, stream: true }),
      });
      const reader = long.body!.getReader();
      await reader.read();
      const r = await fetch(`${s.url}/v1/completions`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "Hi", max_tokens: 2 }),
      });
      expect(r.status).toBe(503);
      expect(r.headers.get("retry-after")).toBe("1");
      expect((await json(r)).error.type).toBe("server_error");
      while (!(await reader.read()).done);
      expect(long.status).toBe(200);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  }, 60_000);

  test("bad flag values fail at start naming the flag", async () => {
    for (const [flag, value] of [["--port", "abc"], ["--cache", "lru"], ["--page-size", "0"], ["--device", "tpu"]]) {
      const p = Bun.spawnSync(["bun", "src/cli.ts", "serve", "--model", model, flag, value]);
      expect(p.exitCode).toBe(1);
      expect(p.stderr.toString()).toContain(flag);
    }
  });
});
