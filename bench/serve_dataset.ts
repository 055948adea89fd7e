// The requests of a serving benchmark.
// Random: prompt lengths and output lengths uniform in their ranges, prompt token ids uniform in
// [0, 10000] (as the offline workload), all drawn from CPython's generator with --seed. They are sent as
// token-id arrays to /v1/completions: the server sees exactly the intended input length (no decode →
// re-encode drift), the client needs no tokenizer, and our server, vLLM and SGLang all accept token-id
// prompts there.
// ShareGPT: sglang.bench_serving's sampling of a ShareGPT-format JSON file — conversations with at least
// two turns, the first turn as the prompt (text), the second turn's token count as the output length,
// shuffled with the seed; pairs with fewer than 2 prompt or output tokens, more than 1024 prompt tokens or
// more than 2048 tokens in all are skipped.
import { readFileSync } from "node:fs";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";
import { MAX_PROMPT_TOKEN_ID } from "./offline_workload.ts";
import { PyRandom } from "./py_random.ts";

export interface BenchRequest {
  prompt: number[] | string;
  promptLen: number;
  outputLen: number;
}

const SHAREGPT_MAX_PROMPT = 1024;
const SHAREGPT_MAX_TOTAL = 2048;

export function randomRequests(n: number, inputLen: [number, number], outputLen: [number, number], random: PyRandom): BenchRequest[] {
  return Array.from({ length: n }, () => {
    const promptLen = random.randint(inputLen[0], inputLen[1]);
    const outLen = random.randint(outputLen[0], outputLen[1]);
    const prompt = Array.from({ length: promptLen }, () => random.randint(0, MAX_PROMPT_TOKEN_ID));
    return { prompt, promptLen, outputLen: outLen };
  });
}

interface ShareGptEntry {
  conversations?: { from?: string; value?: string }[];
}

export async function shareGptRequests(path: string, n: number, tokenizer: TextTokenizer, random: PyRandom,
  fixedOutputLen?: number): Promise<BenchRequest[]> {
  const data = JSON.parse(readFileSync(path, "utf8")) as unknown;
  if (!Array.isArray(data)) throw new Error(`${path}: a ShareGPT file is a JSON list of {"conversations": [...]}`);
  const pairs = (data as ShareGptEntry[])
    .filter((d) => Array.isArray(d?.conversations) && d.conversations.length >= 2)
    .map((d) => [String(d.conversations![0].value ?? ""), String(d.conversations![1].value ?? "")] as const);
  random.shuffle(pairs as (readonly [string, string])[]);
  const out: BenchRequest[] = [];
  for (const [prompt, completion] of pairs) {
    if (out.length === n) break;
    const promptLen = (await tokenizer.encode(prompt)).length;
    const outputLen = fixedOutputLen ?? (await tokenizer.encode(completion)).length;
    if (promptLen < 2 || outputLen < 2) continue;
    if (promptLen > SHAREGPT_MAX_PROMPT || (fixedOutputLen === undefined && promptLen + outputLen > SHAREGPT_MAX_TOTAL)) continue;
    out.push({ prompt, promptLen, outputLen });
  }
  if (out.length < n) throw new Error(`${path}: only ${out.length} usable conversations for --num-prompts ${n}`);
  return out;
}
