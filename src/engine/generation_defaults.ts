// Sampling defaults from the model's generation_config.json (temperature, top_k, top_p, ...), logged so
// users see what applies when a request leaves a field out.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_SAMPLING_PARAMS, resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from "./sampling_params.ts";

const FIELDS: Record<string, keyof SamplingParamsInput> = {
  temperature: "temperature",
  top_k: "topK",
  top_p: "topP",
  min_p: "minP",
  repetition_penalty: "repetitionPenalty",
};

export function generationDefaults(modelDir: string, vocabSize: number, log: (line: string) => void): SamplingParams {
  const path = join(modelDir, "generation_config.json");
  const input: Record<string, unknown> = {};
  if (existsSync(path)) {
    const json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    for (const [hf, ours] of Object.entries(FIELDS)) if (typeof json[hf] === "number") input[ours] = json[hf];
    if (json.do_sample === false) input.temperature = 0;
  }
  const defaults = resolveSamplingParams(input as SamplingParamsInput, DEFAULT_SAMPLING_PARAMS, vocabSize);
  const shown = Object.values(FIELDS).map((k) => `${k}=${defaults[k]}`).join(", ");
  log(`Sampling defaults (${existsSync(path) ? "generation_config.json" : "built-in"}): ${shown}, maxTokens=${defaults.maxTokens}`);
  return defaults;
}
