// The embedded default model (models/default): what `bun run serve` and `bun run shell` load without --model.
// It is trained from scratch by scripts/default_model/ (see the README there) and committed with the repo.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PROJECT_ROOT } from "./backend/library_paths.ts";

export const DEFAULT_MODEL_DIR = join(PROJECT_ROOT, "models/default");
export const DEFAULT_MODEL_NAME = "default";
const NEEDED = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

/** models/default when it is complete; otherwise an error that says what is missing and what to do. */
export function defaultModelDir(dir = DEFAULT_MODEL_DIR): string {
  const missing = NEEDED.filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    throw new Error(
      `no --model given and the embedded default model in ${dir} lacks ${missing.join(", ")}: ` +
        "pass --model (a local HF model directory or a Hugging Face id such as Qwen/Qwen3-0.6B), " +
        "or train it with scripts/default_model/ (see its README)",
    );
  }
  return dir;
}
