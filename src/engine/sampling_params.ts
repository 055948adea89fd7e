// Sampling parameters of one request: the camelCase options users pass, validated once into a complete
// record the scheduler and sampler can trust. Every violation names the parameter.

export interface SamplingParams {
  maxTokens: number; // ≥ 1
  temperature: number; // 0 = greedy
  topK: number; // 0 = off
  topP: number; // (0, 1]; 1 = off
  minP: number; // [0, 1); 0 = off
  seed: number | null; // uint32; null = a fresh random seed per request
  stop: string[]; // matched on the detokenized text, trimmed from the output
  stopTokenIds: number[];
  ignoreEos: boolean;
  presencePenalty: number; // [-2, 2], on generated tokens
  frequencyPenalty: number; // [-2, 2], on generated tokens
  repetitionPenalty: number; // > 0, 1 = off; on prompt and generated tokens (HF semantics)
  logitBias: Record<number, number>; // token id → added to the logit, [-100, 100]
  minTokens: number; // EOS and stop tokens are banned before this many tokens
  n: number; // samples per prompt, sharing its KV
  logprobs: boolean; // log-probability of each sampled token
  topLogprobs: number; // [0, 20] most likely alternatives per position
  skipSpecialTokens: boolean;
}

export type SamplingParamsInput = Partial<SamplingParams>;

export const SAMPLING_LIMITS = { maxN: 64, maxTopLogprobs: 20, maxStops: 16 } as const;

export const DEFAULT_SAMPLING_PARAMS: Readonly<SamplingParams> = {
  maxTokens: 16,
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  seed: null,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  logitBias: {},
  minTokens: 0,
  n: 1,
  logprobs: false,
  topLogprobs: 0,
  skipSpecialTokens: true,
};

export class SamplingParamsError extends Error {
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(`${param}: ${message}`);
    this.name = "SamplingParamsError";
  }
}

const KNOWN = new Set(Object.keys(DEFAULT_SAMPLING_PARAMS));

/** Fills defaults and validates; `vocabSize` bounds token ids in stopTokenIds and logitBias. */
export function resolveSamplingParams(
  input: SamplingParamsInput | undefined,
  defaults: Readonly<SamplingParams>,
  vocabSize: number,
): SamplingParams {
  const given = (input ?? {}) as Record<string, unknown>;
  if (typeof given !== "object" || Array.isArray(given)) throw new SamplingParamsError("params", "must be an object");
  for (const key of Object.keys(given)) {
    if (!KNOWN.has(key)) throw new SamplingParamsError(key, `unknown sampling parameter (known: ${[...KNOWN].join(", ")})`);
  }
  const p = { ...defaults, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) } as SamplingParams;
  const fail = (param: keyof SamplingParams, msg: string): never => {
    throw new SamplingParamsError(param, `${msg} (got ${JSON.stringify(p[param])})`);
  };
  const num = (k: keyof SamplingParams) => typeof p[k] === "number" && Number.isFinite(p[k] as number);
  const int = (k: keyof SamplingParams) => Number.isSafeInteger(p[k]);
  const token = (t: unknown) => Number.isInteger(t) && (t as number) >= 0 && (t as number) < vocabSize;

  if (!int("maxTokens") || p.maxTokens < 1) fail("maxTokens", "must be an integer ≥ 1");
  if (!num("temperature") || p.temperature < 0) fail("temperature", "must be a number ≥ 0");
  if (!int("topK") || p.topK < -1) fail("topK", "must be an integer ≥ 0 (0 or -1 disables it)");
  if (p.topK === -1) p.topK = 0;
  if (!num("topP") || p.topP <= 0 || p.topP > 1) fail("topP", "must be in (0, 1]");
  if (!num("minP") || p.minP < 0 || p.minP >= 1) fail("minP", "must be in [0, 1)");
  if (p.seed !== null && (!int("seed") || p.seed < 0 || p.seed > 0xffffffff)) fail("seed", "must be an integer in [0, 2^32)");
  if (typeof p.stop === "string") p.stop = [p.stop];
  if (!Array.isArray(p.stop) || p.stop.some((s) => typeof s !== "string" || s.length === 0)) fail("stop", "must be a non-empty string or a list of them");
  if (p.stop.length > SAMPLING_LIMITS.maxStops) fail("stop", `at most ${SAMPLING_LIMITS.maxStops} stop strings`);
  if (!Array.isArray(p.stopTokenIds) || !p.stopTokenIds.every(token)) fail("stopTokenIds", `must be token ids below ${vocabSize}`);
  if (typeof p.ignoreEos !== "boolean") fail("ignoreEos", "must be a boolean");
  if (!num("presencePenalty") || Math.abs(p.presencePenalty) > 2) fail("presencePenalty", "must be in [-2, 2]");
  if (!num("frequencyPenalty") || Math.abs(p.frequencyPenalty) > 2) fail("frequencyPenalty", "must be in [-2, 2]");
  if (!num("repetitionPenalty") || p.repetitionPenalty <= 0) fail("repetitionPenalty", "must be a number > 0");
  if (typeof p.logitBias !== "object" || p.logitBias === null || Array.isArray(p.logitBias)) fail("logitBias", "must be an object of token id → bias");
  for (const [id, bias] of Object.entries(p.logitBias)) {
    if (!token(Number(id)) || String(Number(id)) !== id) fail("logitBias", `key ${id} is not a token id below ${vocabSize}`);
    if (typeof bias !== "number" || !(Math.abs(bias) <= 100)) fail("logitBias", `bias for ${id} must be in [-100, 100]`);
  }
  if (!int("minTokens") || p.minTokens < 0) fail("minTokens", "must be an integer ≥ 0");
  if (p.minTokens > p.maxTokens) fail("minTokens", `must not exceed maxTokens (${p.maxTokens})`);
  if (!int("n") || p.n < 1 || p.n > SAMPLING_LIMITS.maxN) fail("n", `must be an integer in [1, ${SAMPLING_LIMITS.maxN}]`);
  if (typeof p.logprobs !== "boolean") fail("logprobs", "must be a boolean");
  if (!int("topLogprobs") || p.topLogprobs < 0 || p.topLogprobs > SAMPLING_LIMITS.maxTopLogprobs) {
    fail("topLogprobs", `must be an integer in [0, ${SAMPLING_LIMITS.maxTopLogprobs}]`);
  }
  if (typeof p.skipSpecialTokens !== "boolean") fail("skipSpecialTokens", "must be a boolean");
  return { ...p, stop: [...p.stop], stopTokenIds: [...p.stopTokenIds], logitBias: { ...p.logitBias } };
}

export function isGreedy(p: SamplingParams): boolean {
  return p.temperature === 0 || p.topK === 1;
}
