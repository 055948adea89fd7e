// A short end-to-end run on the GPU for compute-sanitizer (test/gpu/run.sh): prefill, chunked prefill,
// graph-replayed and eager decode, penalties, top-k/top-p sampling and logprobs on the tiny Qwen3.
import { CudaBackend } from "../../src/backend/cuda.ts";
import { Engine } from "../../src/engine/engine.ts";
import { expectIdleInvariants, runToEnd } from "../helpers/engine_run.ts";
import { fixtureDir } from "../helpers/reference.ts";

const backend = new CudaBackend(0);
const engine = Engine.create(backend, {
  modelDir: await fixtureDir("tiny-qwen3"), maxRunningRequests: 8, kvTokens: 4096, maxPrefillLength: 64, cudaGraphMaxBs: 4,
  log: () => {},
});
for (let i = 0; i < 6; i++) {
  const prompt = Array.from({ length: 20 + 30 * i }, (_, j) => (j * 31 + i) % 5000);
  engine.add(i, prompt, i % 2 === 0
    ? { temperature: 0, maxTokens: 10, ignoreEos: true }
    : { temperature: 0.9, topK: 20, topP: 0.9, seed: i, repetitionPenalty: 1.1, logprobs: true, topLogprobs: 3, maxTokens: 12, ignoreEos: true });
}
const out = runToEnd(engine);
const problems = expectIdleInvariants(engine);
engine.close();
backend.close();
if (out.size !== 6 || problems.length > 0) throw new Error(`memcheck run: ${out.size} requests ended, ${problems.join("; ")}`);
console.log(`memcheck run: ${out.size} requests, ${[...out.values()].reduce((a, o) => a + o.tokens.length, 0)} tokens`);
