// SGLang-style native routes (/generate, /flush_cache) and /v1/tokenize, /v1/detokenize.
import { sse } from "elysia";
import { checkModel, type ServerContext } from "./context.ts";
import { ApiError, badRequest } from "./errors.ts";
import { asBody, bool, type Body, intList, obj, str } from "./request_fields.ts";
import { RunningRequest } from "./run_request.ts";
import { samplingFromBody } from "./sampling.ts";

const SGLANG_NAMES: Record<string, string> = { max_new_tokens: "max_tokens", stop_token_ids: "stop_token_ids" };

export async function handleGenerate(ctx: ServerContext, body: unknown, signal: AbortSignal) {
  const b = asBody(body);
  const text = str(b, "text");
  const ids = intList(b, "input_ids");
  if ((text === undefined) === (ids === undefined)) throw badRequest("give exactly one of 'text' and 'input_ids'", "text");
  const prompt = ids ?? (await ctx.tokenizer.encode(text!));
  if (prompt.length === 0) throw badRequest("the prompt is empty", "text");
  const sp: Body = { ...(obj(b, "sampling_params") ?? {}) };
  for (const [theirs, ours] of Object.entries(SGLANG_NAMES)) if (theirs in sp) sp[ours] = sp[theirs];
  const params = samplingFromBody(sp, {
    defaults: ctx.defaults, vocabSize: ctx.vocabSize, maxSeqLen: ctx.maxSeqLen, promptTokens: prompt.length,
    logprobsStyle: "completions", defaultMaxTokens: Math.min(128, Math.max(1, ctx.maxSeqLen - prompt.length)),
  });
  if (params.n !== 1) throw badRequest("/generate takes n = 1", "n");
  const run = new RunningRequest(ctx, prompt, params);
  const reply = () => ({
    text: run.stream.outputs[0].fullText,
    output_ids: run.stream.outputs[0].tokenIds,
    meta_info: {
      id: String(run.stream.uid), prompt_tokens: prompt.length, completion_tokens: run.stream.completionTokens,
      cached_tokens: run.stream.cachedTokens,
      finish_reason: run.stream.finishes[0] ? { type: run.stream.finishes[0] } : null,
    },
  });
  if (!(bool(b, "stream") ?? false)) {
    await run.collect(signal);
    return Response.json(reply());
  }
  return (async function* () {
    try {
      for await (const _ of run.updates(signal)) yield sse({ data: JSON.stringify(reply()) });
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, String(e));
      yield sse({ data: JSON.stringify(err.body()) });
    }
    yield sse({ data: "[DONE]" });
  })();
}

export async function handleFlush(ctx: ServerContext): Promise<Response> {
  if (ctx.client.liveRequests > 0 || !(await ctx.client.flush())) {
    throw new ApiError(400, "cannot flush the cache while requests are running", null, "requests_running");
  }
  return Response.json({ success: true, message: "Cache flushed." });
}

export async function handleTokenize(ctx: ServerContext, body: unknown): Promise<Response> {
  const b = asBody(body);
  checkModel(ctx, b.model);
  let text = str(b, "prompt");
  if (text === undefined) {
    if (!Array.isArray(b.messages)) throw badRequest("give 'prompt' or 'messages'", "prompt");
    text = ctx.tokenizer.applyChatTemplate(b.messages as never, { addGenerationPrompt: bool(b, "add_generation_prompt") ?? true });
  }
  const tokens = await ctx.tokenizer.encode(text);
  return Response.json({ tokens, count: tokens.length, max_model_len: ctx.maxSeqLen });
}

export async function handleDetokenize(ctx: ServerContext, body: unknown): Promise<Response> {
  const b = asBody(body);
  checkModel(ctx, b.model);
  const tokens = intList(b, "tokens");
  if (!tokens) throw badRequest("'tokens' must be a list of token ids", "tokens");
  if (tokens.some((t) => t < 0 || t >= ctx.vocabSize)) throw badRequest(`token ids must be in [0, ${ctx.vocabSize})`, "tokens");
  return Response.json({ prompt: await ctx.tokenizer.decode(tokens, false) });
}
