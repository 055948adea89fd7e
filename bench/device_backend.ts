// The backend a benchmark that drives the model or the ops directly runs on (bench:latency, bench:kernels).
import type { Backend } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { CudaBackend, cudaUnavailableReason } from "../src/backend/cuda.ts";

export function openBackend(device: "cpu" | "cuda"): Backend {
  if (device === "cpu") return new CpuBackend();
  const reason = cudaUnavailableReason();
  if (reason) throw new Error(`--device cuda: ${reason}`);
  return new CudaBackend(0);
}
