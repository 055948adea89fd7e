// The GPU suites run only where a CUDA device and build/libmsgl_cuda.so are present; elsewhere each suite
// is skipped with the reason printed once. Every suite gets the CUDA backend and a CPU backend to compare with.
import { describe, setDefaultTimeout } from "bun:test";
import type { Backend, DevicePtr } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { CudaBackend, cudaUnavailableReason } from "../../src/backend/cuda.ts";
import { cuda } from "../../src/backend/cudart.ts";

export const gpuSkipReason: string | null = cudaUnavailableReason();
// The CPU side of each comparison is slow at real sizes; a test abandoned mid-call would leave native
// threads running while the process tears down.
setDefaultTimeout(300_000);
let gpu: CudaBackend | null = null;
let cpu: CpuBackend | null = null;
let announced = false;

/** The shared CUDA backend of this test process (opened on first use). */
export function cudaBackend(): CudaBackend {
  gpu ??= new CudaBackend(0);
  return gpu;
}

/** MINISGL_GPU_TESTS_ON_CPU=1 runs the suites with the CPU library on both sides, to check the tests themselves
 * without a GPU (every comparison must then pass exactly or within its tolerance). */
const testsOnCpu = process.env.MINISGL_GPU_TESTS_ON_CPU === "1";

export function describeGpu(name: string, body: (gpu: Backend, cpu: Backend) => void): void {
  if (testsOnCpu) {
    cpu ??= new CpuBackend();
    describe(`${name} [CPU on both sides]`, () => body(new CpuBackend(), cpu!));
    return;
  }
  if (gpuSkipReason) {
    if (!announced) console.log(`test/gpu: skipped, no usable GPU here (${gpuSkipReason})`);
    announced = true;
    describe.skip(`${name} [skipped: ${gpuSkipReason}]`, () => {});
    return;
  }
  cpu ??= new CpuBackend();
  describe(name, () => body(cudaBackend(), cpu!));
}

/** Suites that need `count` GPUs of this machine (tensor parallelism); `device` is "cpu" under
 * MINISGL_GPU_TESTS_ON_CPU=1. */
export function describeGpus(name: string, count: number, body: (device: "cpu" | "cuda") => void): void {
  if (testsOnCpu) {
    describe(`${name} [CPU ranks]`, () => body("cpu"));
    return;
  }
  const found = gpuSkipReason ? 0 : cuda.deviceCount();
  const reason = gpuSkipReason ?? (found < count ? `needs ${count} GPUs, found ${found}` : null);
  if (reason) {
    console.log(`test/gpu: "${name}" skipped (${reason})`);
    describe.skip(`${name} [skipped: ${reason}]`, () => {});
    return;
  }
  describe(name, () => body("cuda"));
}

/** Fills a buffer with 0xFF bytes (NaN as bf16 and fp32, −1 as int32) so unwritten outputs show. */
export function poison(backend: Backend, p: DevicePtr, bytes: number): void {
  backend.fill(p, 0xff, bytes);
}
