// How many KV token slots fit on the GPU: the memory-ratio share of the device, minus what the weights and
// activations already hold, minus a reserve for CUDA graphs and the CUDA context's own growth.
import { cuda } from "../backend/cudart.ts";
import type { KvShape } from "../cache/kv_storage.ts";

const GIB = 2 ** 30;
const RESERVE_BYTES = 512 * 2 ** 20;

export function kvBytesPerToken(s: Pick<KvShape, "layers" | "kvHeads" | "headDim">): number {
  return 2 * s.layers * s.kvHeads * s.headDim * 2; // K and V, bf16
}

export function planKvSlots(shape: Omit<KvShape, "slots">, memoryRatio: number, log: (line: string) => void): number {
  const { free, total } = cuda.memInfo();
  const used = total - free;
  const pageTable = shape.rows * shape.maxSeqLen * 4;
  const budget = total * memoryRatio - used - pageTable - RESERVE_BYTES;
  const perToken = kvBytesPerToken(shape);
  const tokens = Math.floor(budget / perToken) - 1; // one slot for the padding request
  const gib = (b: number) => `${(b / GIB).toFixed(2)} GiB`;
  if (tokens < shape.maxSeqLen && tokens < 4096) {
    throw new Error(`not enough GPU memory for the KV cache: ${gib(total)} total × memory ratio ${memoryRatio} leaves ` +
      `${gib(Math.max(budget, 0))} after ${gib(used)} in use (weights, activations) — room for ${Math.max(tokens, 0)} tokens. ` +
      "Raise --memory-ratio, lower --max-running-requests / --max-prefill-length / --max-seq-len, or use more GPUs (--tp).");
  }
  log(`memory: ${gib(total)} GPU, ${gib(used)} in use before KV (weights, activations, CUDA context); ` +
    `KV cache ${gib(tokens * perToken)} = ${tokens} tokens × ${perToken} B (memory ratio ${memoryRatio})`);
  return tokens;
}
