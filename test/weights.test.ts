// Weight loading: on-disk formats give the same model, errors name what is wrong, dummy weights at real sizes.
import { describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import { openMsglLibrary } from "../src/backend/library.ts";
import { CPU_LIBRARY } from "../src/backend/library_paths.ts";
import { loadModel } from "../src/model/load.ts";
import { readSafetensors, writeSafetensors } from "../src/model/safetensors.ts";
import { SingleSequence } from "../src/model/sequence.ts";
import { bunVersionProblem } from "../src/runtime.ts";
import { fixtureDir, maxAbsDiff } from "./helpers/reference.ts";

const be = new CpuBackend();
const PROMPT = [9707, 1879, 11, 419, 374, 264, 1273, 13];

function logitsOf(dir: string, dummyWeight = false): Float32Array {
  const m = loadModel(be, { modelDir: dir, dummyWeight, maxTokens: 64, maxSeqLen: 64 });
  const s = new SingleSequence(be, m.model, 64);
  const out = Float32Array.from(s.feed(PROMPT)[0]);
  s.free();
  m.model.free();
  return out;
}

/** A copy of tiny-qwen3 whose model.safetensors is rewritten by `edit`. */
async function editedCheckpoint(edit: (names: string[]) => { drop?: string; reshape?: string }): Promise<string> {
  const src = await fixtureDir("tiny-qwen3");
  const dir = mkdtempSync(join(tmpdir(), "minisgl-weights-"));
  for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(src, f), join(dir, f));
  const tensors = [...readSafetensors(join(src, "model.safetensors")).values()];
  const { drop, reshape } = edit(tensors.map((t) => t.name));
  writeSafetensors(join(dir, "model.safetensors"), tensors.filter((t) => t.name !== drop).map((t) => ({
    name: t.name, dtype: t.dtype, data: t.data,
    shape: t.name === reshape ? [t.shape.reduce((a, b) => a * b, 1)] : t.shape,
  })));
  return dir;
}

describe("on-disk formats", () => {
  test("sharded, fp32 and fp16 checkpoints load to the same model as bf16", async () => {
    const base = logitsOf(await fixtureDir("tiny-qwen3"));
    expect(maxAbsDiff(logitsOf(await fixtureDir("tiny-qwen3-sharded")), base)).toBe(0);
    expect(maxAbsDiff(logitsOf(await fixtureDir("tiny-qwen3-f32")), base)).toBe(0);
    // fp16 → bf16 rounds a few tiny values differently.
    expect(maxAbsDiff(logitsOf(await fixtureDir("tiny-qwen3-f16")), base)).toBeLessThan(1e-3);
  });

  test("tied embeddings share one device tensor; untied ones load lm_head", async () => {
    const tied = loadModel(be, { modelDir: await fixtureDir("tiny-qwen3"), maxTokens: 8 });
    expect(tied.model.weights.lmHead).toBe(tied.model.weights.embed);
    const untied = loadModel(be, { modelDir: await fixtureDir("tiny-llama"), maxTokens: 8 });
    expect(untied.model.weights.lmHead).not.toBe(untied.model.weights.embed);
    tied.model.free();
    untied.model.free();
  });
});

describe("errors", () => {
  test("a missing tensor names the tensor and the file", async () => {
    const dir = await editedCheckpoint(() => ({ drop: "model.layers.1.mlp.up_proj.weight" }));
    expect(() => loadModel(be, { modelDir: dir })).toThrow(/model\.layers\.1\.mlp\.up_proj\.weight.*model\.safetensors|model\.safetensors.*model\.layers\.1\.mlp\.up_proj\.weight/);
  });

  test("a tensor of the wrong shape names the tensor and both shapes", async () => {
    const dir = await editedCheckpoint(() => ({ reshape: "model.layers.0.self_attn.k_proj.weight" }));
    expect(() => loadModel(be, { modelDir: dir })).toThrow(/k_proj\.weight has shape \[4096\] but the config implies \[64,64\]/);
  });

  test("a missing or stale native library names the command to run", () => {
    expect(() => openMsglLibrary("/nonexistent/libmsgl_cpu.so", "cuda/cpu")).toThrow(/not found: run `bun run build`/);
    const dir = mkdtempSync(join(tmpdir(), "minisgl-lib-"));
    const stale = join(dir, "libmsgl_cpu.so");
    copyFileSync(CPU_LIBRARY, stale);
    expect(() => openMsglLibrary(stale, "cuda/cpu")).toThrow(/other sources.*bun run build/); // no stamp
    writeFileSync(`${stale}.sources`, "a hash of older sources");
    expect(() => openMsglLibrary(stale, "cuda/cpu")).toThrow(/other sources.*bun run build/);
    copyFileSync(`${CPU_LIBRARY}.sources`, `${stale}.sources`);
    expect(() => openMsglLibrary(stale, "cuda/cpu")).not.toThrow();
  });

  test("the Bun version is pinned", () => {
    expect(bunVersionProblem("1.4.5", "1.4.5")).toBeNull();
    expect(bunVersionProblem("1.3.0", "1.4.5")).toContain("npm install -g bun@1.4.5");
    expect(bunVersionProblem(undefined, "1.4.5")).toContain("not Node");
  });
});

describe("dummy weights", () => {
  test("are deterministic and need only config.json", async () => {
    const dir = mkdtempSync(join(tmpdir(), "minisgl-dummy-"));
    copyFileSync(join(await fixtureDir("tiny-llama"), "config.json"), join(dir, "config.json"));
    const a = logitsOf(dir, true);
    expect(maxAbsDiff(a, logitsOf(dir, true))).toBe(0);
    expect(a.every(Number.isFinite)).toBe(true);
  });

  test("run the real Qwen3-0.6B config (head_dim 128, 16/8 heads, 28 layers)", () => {
    const dir = join(import.meta.dir, "configs/Qwen3-0.6B");
    const m = loadModel(be, { modelDir: dir, dummyWeight: true, maxTokens: 16, maxSeqLen: 64 });
    expect(m.config.numLayers).toBe(28);
    expect(m.model.weights.bytes).toBe(2 * 596_049_920); // Qwen3-0.6B parameter count, embeddings tied
    const s = new SingleSequence(be, m.model, 64);
    const logits = s.feed(PROMPT.slice(0, 4))[0];
    expect(logits.length).toBe(151936);
    expect(logits.every(Number.isFinite)).toBe(true);
    s.free();
    m.model.free();
  }, 60_000);
});
