// One streaming request to an OpenAI-compatible server, timed: TTFT (send → first chunk that carries a
// token), ITL (the gap before each later such chunk), E2E (send → end of stream). Output tokens come from
// the usage the server reports (stream_options.include_usage), else from the number of such chunks.
import type { BenchRequest } from "./serve_dataset.ts";

export interface RequestOutcome {
  ok: boolean;
  error: string | null;
  promptTokens: number;
  outputTokens: number;
  ttftMs: number;
  itlMs: number[];
  e2eMs: number;
}

export interface Endpoint {
  baseUrl: string;
  kind: "completions" | "chat";
  model: string;
  apiKey: string | null;
  temperature: number;
}

function body(e: Endpoint, r: BenchRequest, maxTokens: number): Record<string, unknown> {
  const common = {
    model: e.model, max_tokens: maxTokens, temperature: e.temperature, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  };
  if (e.kind === "completions") return { ...common, prompt: r.prompt };
  if (typeof r.prompt !== "string") throw new Error("--endpoint chat needs text prompts (--dataset)");
  return { ...common, messages: [{ role: "user", content: r.prompt }] };
}

/** A completions chunk is one engine step (its text may be empty while a character is incomplete); a chat
 * chunk counts when it carries text, so the role-only first chunk does not count as the first token. */
function carriesToken(kind: Endpoint["kind"], choices: unknown[] | undefined): boolean {
  if (!Array.isArray(choices) || choices.length === 0) return false;
  if (kind === "completions") return true;
  return choices.some((c) => {
    const delta = (c as { delta?: { content?: unknown; reasoning_content?: unknown } }).delta;
    return (typeof delta?.content === "string" && delta.content !== "") ||
      (typeof delta?.reasoning_content === "string" && delta.reasoning_content !== "");
  });
}

export async function streamRequest(e: Endpoint, r: BenchRequest, maxTokens = r.outputLen): Promise<RequestOutcome> {
  const path = e.kind === "completions" ? "/v1/completions" : "/v1/chat/completions";
  const outcome: RequestOutcome = { ok: false, error: null, promptTokens: r.promptLen, outputTokens: 0, ttftMs: 0, itlMs: [], e2eMs: 0 };
  const started = performance.now();
  let last = 0;
  let chunks = 0;
  let usageTokens: number | null = null;
  let done = false;
  try {
    const res = await fetch(`${e.baseUrl}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(e.apiKey ? { authorization: `Bearer ${e.apiKey}` } : {}) },
      body: JSON.stringify(body(e, r, maxTokens)),
    });
    if (!res.ok || !res.body) {
      outcome.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`;
      return outcome;
    }
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const bytes of res.body) {
      buffered += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, end).trim();
        buffered = buffered.slice(end + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") {
          done = true;
          continue;
        }
        const event = JSON.parse(data) as { choices?: unknown[]; usage?: { prompt_tokens?: number; completion_tokens?: number }; error?: { message?: string } };
        if (event.error) {
          outcome.error = `stream error: ${event.error.message ?? JSON.stringify(event.error)}`;
          continue;
        }
        if (event.usage) {
          usageTokens = event.usage.completion_tokens ?? null;
          if (typeof event.usage.prompt_tokens === "number") outcome.promptTokens = event.usage.prompt_tokens;
        }
        if (carriesToken(e.kind, event.choices)) {
          const now = performance.now();
          if (chunks === 0) outcome.ttftMs = now - started;
          else outcome.itlMs.push(now - last);
          last = now;
          chunks++;
        }
      }
    }
    outcome.e2eMs = performance.now() - started;
    outcome.outputTokens = usageTokens ?? chunks;
    if (!outcome.error && !done) outcome.error = "the stream ended without [DONE]";
    if (!outcome.error && outcome.outputTokens === 0) outcome.error = "no output tokens";
    outcome.ok = outcome.error === null;
  } catch (err) {
    outcome.error = err instanceof Error ? err.message : String(err);
  }
  return outcome;
}
