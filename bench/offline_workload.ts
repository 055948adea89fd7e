// The offline benchmark workload of nano-vllm's bench.py (reused by Mini-SGLang), drawn with CPython's
// generator so it is the same workload token for token: random.seed(seed); for each request
// randint(MIN_IN, MAX_IN) prompt tokens, each randint(0, 10000) (both ends included, as Python's randint);
// then for each request max_tokens = randint(MIN_OUT, MAX_OUT). Seed 0 with the default sizes gives 142,827
// prompt and 133,966 output tokens.
import { PyRandom } from "./py_random.ts";

/** Prompt token ids are drawn from [0, MAX_PROMPT_TOKEN_ID], as nano-vllm's randint(0, 10000). */
export const MAX_PROMPT_TOKEN_ID = 10000;

export interface OfflineWorkload {
  prompts: number[][];
  outputLens: number[];
}

export function offlineWorkload(numSeqs: number, inputLen: [number, number], outputLen: [number, number], seed: number): OfflineWorkload {
  const random = new PyRandom(seed);
  const prompts = Array.from({ length: numSeqs }, () =>
    Array.from({ length: random.randint(inputLen[0], inputLen[1]) }, () => random.randint(0, MAX_PROMPT_TOKEN_ID)));
  const outputLens = Array.from({ length: numSeqs }, () => random.randint(outputLen[0], outputLen[1]));
  return { prompts, outputLens };
}
