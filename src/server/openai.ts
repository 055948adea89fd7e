// POST /v1/completions and POST /v1/chat/completions, streaming (SSE, one chunk per engine step per
// request) and not. Errors before the first byte are HTTP errors; errors mid-stream are sent as
// `data: {"error": ...}` before `[DONE]`.
import { sse } from "elysia";
import type { TokenLogprob } from "../engine/sample_output.ts";
import type { ChatMessage } from "../tokenizer/tokenizer.ts";
import { checkModel, type ServerContext } from "./context.ts";
import { ApiError, badRequest } from "./errors.ts";
import { ReasoningSplitter } from "./reasoning.ts";
import { asBody, type Body, bool, obj } from "./request_fields.ts";
import { RunningRequest } from "./run_request.ts";
import { samplingFromBody } from "./sampling.ts";

type Kind = "chat" | "completions";

async function promptOf(ctx: ServerContext, b: Body, kind: Kind): Promise<number[]> {
  if (kind === "completions") {
    let p = b.prompt;
    if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") p = p[0];
    if (typeof p === "string") return ctx.tokenizer.encode(p);
    if (Array.isArray(p) && p.every((t) => Number.isInteger(t))) return p as number[];
    throw badRequest("'prompt' must be a string, a list with one string, or a list of token ids", "prompt");
  }
  const messages = b.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest("'messages' must be a non-empty list", "messages");
  const parsed: ChatMessage[] = messages.map((m, i) => {
    if (m === null || typeof m !== "object" || typeof (m as Body).role !== "string") {
      throw badRequest(`messages[${i}] must be an object with a 'role'`, "messages");
    }
    const msg = m as Body;
    let content = msg.content;
    if (Array.isArray(content)) {
      content = content.map((part) => {
        if (part && typeof part === "object" && (part as Body).type === "text") return String((part as Body).text ?? "");
        throw badRequest(`messages[${i}]: only text content parts are supported`, "messages");
      }).join("");
    }
    if (content !== null && content !== undefined && typeof content !== "string") throw badRequest(`messages[${i}].content must be a string`, "messages");
    return { ...(msg as ChatMessage), content: (content as string | undefined) ?? null };
  });
  const kwargs = obj(b, "chat_template_kwargs") ?? {};
  const text = ctx.tokenizer.applyChatTemplate(parsed, {
    addGenerationPrompt: bool(b, "add_generation_prompt") ?? true, kwargs, tools: Array.isArray(b.tools) ? b.tools : undefined,
  });
  return ctx.tokenizer.encode(text);
}

async function tokenText(ctx: ServerContext, id: number): Promise<string> {
  return ctx.tokenizer.decode([id], false);
}

async function chatLogprobs(ctx: ServerContext, lps: TokenLogprob[]) {
  const entry = async (token: number, logprob: number) => {
    const text = await tokenText(ctx, token);
    return { token: text, logprob, bytes: [...new TextEncoder().encode(text)] };
  };
  return Promise.all(lps.map(async (lp) => ({
    ...(await entry(lp.token, lp.logprob)),
    top_logprobs: await Promise.all(lp.top.map((t) => entry(t.token, t.logprob))),
  })));
}

async function completionLogprobs(ctx: ServerContext, lps: TokenLogprob[]) {
  const tokens = await Promise.all(lps.map((lp) => tokenText(ctx, lp.token)));
  const top = await Promise.all(lps.map(async (lp) =>
    Object.fromEntries(await Promise.all(lp.top.map(async (t) => [await tokenText(ctx, t.token), t.logprob])))));
  return { tokens, token_logprobs: lps.map((lp) => lp.logprob), top_logprobs: top };
}

export async function handleCompletion(ctx: ServerContext, body: unknown, signal: AbortSignal, kind: Kind) {
  const b = asBody(body);
  checkModel(ctx, b.model);
  const prompt = await promptOf(ctx, b, kind);
  if (prompt.length === 0) throw badRequest("the prompt is empty", kind === "chat" ? "messages" : "prompt");
  const params = samplingFromBody(b, {
    defaults: ctx.defaults, vocabSize: ctx.vocabSize, maxSeqLen: ctx.maxSeqLen, promptTokens: prompt.length,
    logprobsStyle: kind, defaultMaxTokens: kind === "chat" ? Math.max(1, ctx.maxSeqLen - prompt.length) : Math.min(16, Math.max(1, ctx.maxSeqLen - prompt.length)),
  });
  const stream = bool(b, "stream") ?? false;
  const includeUsage = stream && (obj(b, "stream_options")?.include_usage === true);
  const separateReasoning = kind === "chat" && (bool(b, "separate_reasoning") ?? false);
  const run = new RunningRequest(ctx, prompt, params);
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${run.stream.uid}`;
  const created = Math.floor(Date.now() / 1000);
  const head = { id, object: kind === "chat" ? "chat.completion" : "text_completion", created, model: ctx.modelName };

  if (!stream) {
    await run.collect(signal);
    const choices = await Promise.all(run.stream.outputs.map(async (o, index) => {
      const finish_reason = run.stream.finishes[index];
      if (kind === "completions") {
        return { index, text: o.fullText, finish_reason, logprobs: params.logprobs ? await completionLogprobs(ctx, o.logprobs) : null };
      }
      const message: Record<string, unknown> = { role: "assistant", content: o.fullText };
      if (separateReasoning) {
        const split = new ReasoningSplitter().push(o.fullText, true);
        message.content = split.content;
        message.reasoning_content = split.reasoning || null;
      }
      return { index, message, finish_reason, logprobs: params.logprobs ? { content: await chatLogprobs(ctx, o.logprobs) } : null };
    }));
    return Response.json({ ...head, choices, usage: run.usage() });
  }

  const chunkHead = { ...head, object: kind === "chat" ? "chat.completion.chunk" : "text_completion" };
  const splitters = params.n > 0 ? run.stream.outputs.map(() => new ReasoningSplitter()) : [];
  return (async function* () {
    try {
      if (kind === "chat") {
        const choices = run.stream.outputs.map((_, index) => ({ index, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null }));
        yield sse({ data: JSON.stringify({ ...chunkHead, choices }) });
      }
      for await (const step of run.updates(signal)) {
        const choices = await Promise.all(step.map(async (u) => {
          if (kind === "completions") {
            return { index: u.index, text: u.text, finish_reason: u.finishReason,
              logprobs: params.logprobs ? await completionLogprobs(ctx, u.logprobs) : null };
          }
          const delta: Record<string, string> = {};
          if (separateReasoning) {
            const split = splitters[u.index].push(u.text, u.finishReason !== null);
            if (split.reasoning) delta.reasoning_content = split.reasoning;
            if (split.content) delta.content = split.content;
          } else if (u.text) delta.content = u.text;
          return { index: u.index, delta, finish_reason: u.finishReason,
            logprobs: params.logprobs ? { content: await chatLogprobs(ctx, u.logprobs) } : null };
        }));
        if (choices.length) yield sse({ data: JSON.stringify({ ...chunkHead, choices }) });
      }
      if (includeUsage && !signal.aborted) yield sse({ data: JSON.stringify({ ...chunkHead, choices: [], usage: run.usage() }) });
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, e instanceof Error ? e.message : String(e));
      yield sse({ data: JSON.stringify(err.body()) });
    }
    yield sse({ data: "[DONE]" });
  })();
}
