// Runs one sequence on `size` rank Workers (test/helpers/tp_forward_worker.ts) and returns each rank's
// logits [rows, vocab]; size 1 runs the whole model in one Worker.
import { createRankGroup } from "../../src/engine/rank_group.ts";
import type { ForwardJob } from "./tp_forward_worker.ts";

export async function groupLogits(device: "cpu" | "cuda", size: number, modelDir: string, prompt: number[], decode: number[],
  dummyWeight = false): Promise<Float32Array[]> {
  const group = size > 1 ? createRankGroup(size, { fault: null, timeoutMs: 60_000 }) : null;
  const workers = Array.from({ length: size }, () => new Worker(new URL("./tp_forward_worker.ts", import.meta.url).href));
  try {
    return await Promise.all(workers.map((w, rank) => new Promise<Float32Array>((resolve, reject) => {
      w.onmessage = (e) => (e.data.type === "logits" ? resolve(e.data.logits) : reject(new Error(e.data.message)));
      w.onerror = (e) => reject(new Error(`rank ${rank} crashed: ${e.message}`));
      const job: ForwardJob = { device, rank, group, modelDir, dummyWeight, prompt, decode };
      w.postMessage(job);
    })));
  } finally {
    for (const w of workers) w.terminate();
  }
}
