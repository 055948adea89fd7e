// Whole models on the GPU against transformers on the same random weights: our dummy weights are written
// out as an HF checkpoint, transformers (float32 on the GPU) runs it in a subprocess, and the last-position
// logits and greedy continuations are compared. Real configs: Qwen3-0.6B in full, Llama-3.1-8B cut to
// 4 layers (every shape is real; only the depth is cut to save device time).
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src/model/load.ts";
import { writeSafetensors } from "../../src/model/safetensors.ts";
import { argmax, SingleSequence } from "../../src/model/sequence.ts";
import { checkpointTensors } from "../../src/model/weights.ts";
import { rng } from "../helpers/rng.ts";
import { cudaBackend, describeGpu } from "./gpu.ts";

const STEPS = 16;
// Share of the reference logit range; bf16 activations through 28 layers against a float32 reference.
const LOGIT_TOLERANCE = 0.02;

interface HfResult {
  last_logits: number[];
  greedy: number[];
  margins: number[];
}

function modelDir(configName: string, layers?: number): string {
  const dir = mkdtempSync(join(tmpdir(), `minisgl-gpu-${configName}-`));
  const config = JSON.parse(readFileSync(join(import.meta.dir, "../configs", configName, "config.json"), "utf8"));
  if (layers) config.num_hidden_layers = layers;
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

function randomPrompts(vocab: number): number[][] {
  const r = rng(7);
  return [9, 120, 700].map((n) => Array.from({ length: n }, () => Math.floor(r() * Math.min(vocab, 100000))));
}

describeGpu("whole models against transformers (dummy weights, real configs)", () => {
  for (const [name, layers] of [["Qwen3-0.6B", undefined], ["Llama-3.1-8B", 4]] as const) {
    test(`${name}${layers ? ` (${layers} layers)` : ""}: last logits and greedy continuation`, () => {
      const be = cudaBackend();
      const dir = modelDir(name, layers);
      try {
        const { model, config } = loadModel(be, { modelDir: dir, dummyWeight: true, maxSeqLen: 1024, maxTokens: 1024 });
        writeSafetensors(join(dir, "model.safetensors"), checkpointTensors(be, config, model.weights));
        const prompts = randomPrompts(config.vocabSize);
        writeFileSync(join(dir, "prompts.json"), JSON.stringify(prompts));
        const hf = Bun.spawnSync(["python3", join(import.meta.dir, "hf_reference.py"), dir, join(dir, "prompts.json"),
          join(dir, "hf.json"), String(STEPS)], { stdout: "inherit", stderr: "inherit" });
        expect(hf.exitCode).toBe(0);
        const refs = JSON.parse(readFileSync(join(dir, "hf.json"), "utf8")) as HfResult[];
        prompts.forEach((ids, p) => {
          const ref = refs[p];
          const seq = new SingleSequence(be, model, 1024);
          let logits = seq.feed(ids)[0];
          let worst = 0;
          let min = Infinity, max = -Infinity;
          for (let i = 0; i < logits.length; i++) {
            worst = Math.max(worst, Math.abs(logits[i] - ref.last_logits[i]));
            min = Math.min(min, ref.last_logits[i]);
            max = Math.max(max, ref.last_logits[i]);
          }
          const share = worst / (max - min);
          console.log(`${name} prompt ${ids.length} tokens: max |Δlogit| ${worst.toFixed(4)} = ${(100 * share).toFixed(2)}% of range`);
          expect(share).toBeLessThan(LOGIT_TOLERANCE);
          // Greedy continuation: identical until the first step whose reference margin is within tolerance.
          for (let s = 0; s < STEPS; s++) {
            const token = argmax(logits);
            if (ref.margins[s] < LOGIT_TOLERANCE * (max - min)) break;
            expect(token).toBe(ref.greedy[s]);
            logits = seq.feed([token])[0];
          }
          seq.free();
        });
        model.free();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 600_000);
  }
});
