// Public API of minisgl.
export { LLM, type GenerateResult, type LLMOptions, type Sample } from "./llm.ts";
export type { SamplingParams, SamplingParamsInput } from "./engine/sampling_params.ts";
export { TextTokenizer } from "./tokenizer/tokenizer.ts";
export { EngineFailed } from "./engine/client.ts";
