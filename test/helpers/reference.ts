// Loads the transformers reference outputs committed under test/reference/ and checks that the local
// fixtures are the very checkpoints they were computed from.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureFixtures } from "../../scripts/make_fixtures.ts";

export const REFERENCE_DIR = join(import.meta.dir, "../reference");

export interface PromptReference {
  text: string;
  ids: number[];
  topk_ids: number[][];
  topk_values: number[][];
  last_logit_min: number;
  last_logit_max: number;
  greedy: number[];
  greedy_margins: number[];
}

export interface ModelReference {
  model: string;
  safetensors_sha256: string;
  prompts: PromptReference[];
  lastLogits: Float32Array[]; // per prompt, full vocabulary
}

export async function fixtureDir(name: string): Promise<string> {
  return join(await ensureFixtures(), name);
}

export async function loadReference(name: string, vocab: number): Promise<ModelReference> {
  const jsonPath = join(REFERENCE_DIR, `${name}.json`);
  if (!existsSync(jsonPath)) {
    throw new Error(`${jsonPath} missing: run test/reference/make_reference.py on the GPU machine (see its docstring)`);
  }
  const ref = JSON.parse(readFileSync(jsonPath, "utf8")) as Omit<ModelReference, "lastLogits">;
  const sha = new Bun.CryptoHasher("sha256").update(readFileSync(join(await fixtureDir(name), "model.safetensors"))).digest("hex");
  if (sha !== ref.safetensors_sha256) {
    throw new Error(`test/fixtures/${name} differs from the checkpoint the reference was made from: ` +
      "regenerate the reference with test/reference/make_reference.py");
  }
  const raw = readFileSync(join(REFERENCE_DIR, `${name}.last_logits.f32`));
  const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const lastLogits = ref.prompts.map((_, i) => all.subarray(i * vocab, (i + 1) * vocab));
  return { ...ref, lastLogits };
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
