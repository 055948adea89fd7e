import { dirname, join } from "node:path";

export const PROJECT_ROOT = join(dirname(new URL(import.meta.url).pathname), "../..");
export const CPU_LIBRARY = join(PROJECT_ROOT, "build/libmsgl_cpu.so");
export const CUDA_LIBRARY = join(PROJECT_ROOT, "build/libmsgl_cuda.so");
export const ABI_HEADER = join(PROJECT_ROOT, "cuda/include/msgl.h");
