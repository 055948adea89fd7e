// OpenAI / SGLang / vLLM sampling fields (snake_case) → validated SamplingParams.
import { resolveSamplingParams, SamplingParamsError, type SamplingParams, type SamplingParamsInput } from "../engine/sampling_params.ts";
import { ApiError, badRequest } from "./errors.ts";
import { bool, type Body, int, intList, num, obj } from "./request_fields.ts";

const SNAKE: Record<string, string> = {
  maxTokens: "max_tokens", topK: "top_k", topP: "top_p", minP: "min_p", stopTokenIds: "stop_token_ids",
  ignoreEos: "ignore_eos", presencePenalty: "presence_penalty", frequencyPenalty: "frequency_penalty",
  repetitionPenalty: "repetition_penalty", logitBias: "logit_bias", minTokens: "min_tokens", topLogprobs: "top_logprobs",
  skipSpecialTokens: "skip_special_tokens",
};

export interface SamplingContext {
  defaults: SamplingParams;
  vocabSize: number;
  maxSeqLen: number;
  promptTokens: number;
  /** Whether logprobs is a count (completions) or a boolean with top_logprobs beside it (chat). */
  logprobsStyle: "chat" | "completions";
  /** max_tokens when the request leaves it out. */
  defaultMaxTokens: number;
}

export function samplingFromBody(b: Body, ctx: SamplingContext): SamplingParams {
  const input: SamplingParamsInput = {};
  const maxTokens = int(b, "max_completion_tokens") ?? int(b, "max_tokens");
  input.maxTokens = maxTokens ?? ctx.defaultMaxTokens;
  const set = <K extends keyof SamplingParamsInput>(k: K, v: SamplingParamsInput[K] | undefined) => {
    if (v !== undefined) input[k] = v;
  };
  set("temperature", num(b, "temperature"));
  set("topP", num(b, "top_p"));
  set("topK", int(b, "top_k"));
  set("minP", num(b, "min_p"));
  set("seed", int(b, "seed"));
  set("n", int(b, "n"));
  set("presencePenalty", num(b, "presence_penalty"));
  set("frequencyPenalty", num(b, "frequency_penalty"));
  set("repetitionPenalty", num(b, "repetition_penalty"));
  set("minTokens", int(b, "min_tokens"));
  set("stopTokenIds", intList(b, "stop_token_ids"));
  set("ignoreEos", bool(b, "ignore_eos"));
  set("skipSpecialTokens", bool(b, "skip_special_tokens"));
  const stop = b.stop;
  if (stop !== undefined && stop !== null) {
    if (typeof stop === "string") input.stop = [stop];
    else if (Array.isArray(stop) && stop.every((s) => typeof s === "string")) input.stop = stop as string[];
    else throw badRequest("'stop' must be a string or a list of strings", "stop");
  }
  const bias = obj(b, "logit_bias");
  if (bias) {
    const parsed: Record<number, number> = {};
    for (const [k, v] of Object.entries(bias)) {
      if (!/^\d+$/.test(k) || typeof v !== "number") throw badRequest("'logit_bias' maps token ids to numbers", "logit_bias");
      parsed[Number(k)] = v;
    }
    input.logitBias = parsed;
  }
  if (ctx.logprobsStyle === "chat") {
    set("logprobs", bool(b, "logprobs"));
    set("topLogprobs", int(b, "top_logprobs"));
    if (input.topLogprobs && !input.logprobs) throw badRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  } else {
    const k = int(b, "logprobs");
    if (k !== undefined) {
      input.logprobs = true;
      input.topLogprobs = k;
    }
  }
  let params: SamplingParams;
  try {
    params = resolveSamplingParams(input, ctx.defaults, ctx.vocabSize);
  } catch (e) {
    if (e instanceof SamplingParamsError) {
      const param = SNAKE[e.param] ?? e.param;
      throw badRequest(e.message.replace(e.param, param), param);
    }
    throw e;
  }
  if (ctx.promptTokens + params.maxTokens > ctx.maxSeqLen) {
    throw new ApiError(400, `This model's maximum context length is ${ctx.maxSeqLen} tokens. However, you requested ` +
      `${ctx.promptTokens + params.maxTokens} tokens (${ctx.promptTokens} in the prompt, ${params.maxTokens} for the ` +
      "completion). Please reduce the prompt or max_tokens.", "max_tokens", "context_length_exceeded");
  }
  return params;
}
