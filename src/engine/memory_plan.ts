// How many KV token slots fit on the GPU: the memory-ratio share of the device, minus what the weights and
// activations already hold, minus a reserve for CUDA graphs and the CUDA context's own growth. Under tensor
// parallelism every rank allocates the same KV shape, so the GPU with the least room decides.
import type { Backend } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
import { CudaBackend } from "../backend/cuda.ts";
import { cuda } from "../backend/cudart.ts";
import type { KvShape } from "../cache/kv_storage.ts";

const MIB = 2 ** 20;
const GIB = 2 ** 30;
const RESERVE_BYTES = 512 * MIB;

/** One rank's GPU after its weights were loaded and before the model's workspace was allocated (rank 0
 * adds its workspace back; the other ranks measure before allocating theirs, which is the same size). */
export interface GpuMemory {
  total: number;
  free: number;
}

export function kvBytesPerToken(s: Pick<KvShape, "layers" | "kvHeads" | "headDim">): number {
  return 2 * s.layers * s.kvHeads * s.headDim * 2; // K and V, bf16
}

/** This rank's GPU as if `workspaceBytes` allocated since the weights were not (zeros on the CPU). */
export function gpuMemoryBeforeWorkspace(backend: Backend, workspaceBytes: number): GpuMemory {
  if (!(backend instanceof CudaBackend)) return { total: 0, free: 0 };
  const { total, free } = cuda.memInfo();
  return { total, free: free + workspaceBytes };
}

/** Every rank's GpuMemory in rank order, through one all-gather (whole MiB: exact in fp32). Every rank of
 * the group calls it at the same point. */
export function gatherGpuMemory(backend: Backend, comm: Communicator, own: GpuMemory): GpuMemory[] {
  const send = backend.alloc(8), recv = backend.alloc(8 * comm.size);
  try {
    backend.upload(send, Float32Array.of(Math.floor(own.total / MIB), Math.floor(own.free / MIB)));
    comm.allGather(recv, send, 2);
    const all = new Float32Array(2 * comm.size);
    backend.download(all, recv);
    return Array.from({ length: comm.size }, (_, r) => ({ total: all[2 * r] * MIB, free: all[2 * r + 1] * MIB }));
  } finally {
    backend.free(send);
    backend.free(recv);
  }
}

/** KV token slots for `shape` when each rank also allocates `workspaceBytes` of activations; gpus[r] is
 * rank r's memory (one entry without tensor parallelism). */
export function planKvSlots(shape: Omit<KvShape, "slots">, memoryRatio: number, workspaceBytes: number, gpus: GpuMemory[],
  log: (line: string) => void): number {
  if (gpus.length === 0) throw new Error("planKvSlots: no GPU memory to plan from");
  const pageTable = shape.rows * shape.maxSeqLen * 4;
  const used = gpus.map((g) => g.total - g.free + workspaceBytes);
  const budgets = gpus.map((g, r) => g.total * memoryRatio - used[r] - pageTable - RESERVE_BYTES);
  let tight = 0;
  for (let r = 1; r < gpus.length; r++) if (budgets[r] < budgets[tight]) tight = r;
  const { total } = gpus[tight], budget = budgets[tight];
  const perToken = kvBytesPerToken(shape);
  const tokens = Math.floor(budget / perToken) - 1; // one slot for the padding request
  const gib = (b: number) => `${(b / GIB).toFixed(2)} GiB`;
  const where = gpus.length > 1 ? ` on rank ${tight}'s GPU, the one with the least room` : "";
  if (tokens < shape.maxSeqLen && tokens < 4096) {
    throw new Error(`not enough GPU memory for the KV cache${where}: ${gib(total)} total × memory ratio ${memoryRatio} leaves ` +
      `${gib(Math.max(budget, 0))} after ${gib(used[tight])} in use (weights, activations) — room for ${Math.max(tokens, 0)} tokens. ` +
      "Raise --memory-ratio, lower --max-running-requests / --max-prefill-length / --max-seq-len, or use more GPUs (--tp).");
  }
  log(`memory: ${gib(total)} GPU, ${gib(used[tight])} in use before KV (weights, activations, CUDA context)${where}; ` +
    `KV cache ${gib(tokens * perToken)} = ${tokens} tokens × ${perToken} B (memory ratio ${memoryRatio})`);
  return tokens;
}
