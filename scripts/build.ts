// `bun run build` (also run by `bun install`): builds build/libmsgl_cpu.so from cuda/cpu/*.cpp.
// The CUDA library (cuda/kernels/*.cu → build/libmsgl_cuda.so) arrives with the CUDA backend.
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { CPU_LIBRARY, PROJECT_ROOT } from "../src/backend/library_paths.ts";

function run(cmd: string[]): void {
  const started = performance.now();
  const proc = Bun.spawnSync(cmd, { cwd: PROJECT_ROOT, stdout: "inherit", stderr: "inherit" });
  if (proc.exitCode !== 0) {
    console.error(`build failed (exit ${proc.exitCode}): ${cmd.join(" ")}`);
    process.exit(1);
  }
  console.log(`built ${cmd[cmd.indexOf("-o") + 1]} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

function buildCpu(): void {
  if (!Bun.which("g++")) {
    console.error("g++ not found: install a C++ compiler (e.g. `apt-get install g++`), then run `bun run build`");
    process.exit(1);
  }
  const sources = readdirSync(join(PROJECT_ROOT, "cuda/cpu"))
    .filter((f) => f.endsWith(".cpp"))
    .sort()
    .map((f) => `cuda/cpu/${f}`);
  mkdirSync(join(PROJECT_ROOT, "build"), { recursive: true });
  const arch = process.env.MINISGL_CPU_ARCH ?? "native";
  run(["g++", "-O3", `-march=${arch}`, "-fopenmp", "-fPIC", "-shared", "-std=c++17", "-Wall", "-Wextra",
    "-Wno-unused-parameter", ...sources, "-o", CPU_LIBRARY]);
}

buildCpu();
