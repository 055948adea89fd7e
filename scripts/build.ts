// `bun run build` (also run by `bun install`): builds build/libmsgl_cpu.so from cuda/cpu/*.cpp always, and
// build/libmsgl_cuda.so from cuda/kernels/*.cu when nvcc is found (CUDA_HOME/bin, /usr/local/cuda/bin or PATH).
// Each library gets a stamp of its sources' hash, which the loader checks (see src/backend/library.ts).
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CPU_LIBRARY, CUDA_LIBRARY, PROJECT_ROOT } from "../src/backend/library_paths.ts";
import { librarySources, sourcesHash, stampPath } from "../src/backend/library_stamp.ts";

// MINISGL_CUDA_ARCHS=90a (comma-separated) builds fewer architectures, e.g. for a quick build on one GPU.
const CUDA_ARCHS = (process.env.MINISGL_CUDA_ARCHS ?? "80,89,90a").split(",");

async function run(cmd: string[]): Promise<void> {
  const proc = Bun.spawn(cmd, { cwd: PROJECT_ROOT, stdout: "inherit", stderr: "inherit" });
  if ((await proc.exited) !== 0) {
    console.error(`build failed (exit ${proc.exitCode}): ${cmd.join(" ")}`);
    process.exit(1);
  }
}

async function timed(library: string, sourceDir: string, build: () => Promise<void>): Promise<void> {
  const started = performance.now();
  mkdirSync(join(PROJECT_ROOT, "build"), { recursive: true });
  await build();
  writeFileSync(stampPath(library), sourcesHash(sourceDir));
  console.log(`built ${library} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

async function buildCpu(): Promise<void> {
  if (!Bun.which("g++")) {
    console.error("g++ not found: install a C++ compiler (e.g. `apt-get install g++`), then run `bun run build`");
    process.exit(1);
  }
  const arch = process.env.MINISGL_CPU_ARCH ?? "native";
  await timed(CPU_LIBRARY, "cuda/cpu", () => run(["g++", "-O3", `-march=${arch}`, "-fopenmp", "-fPIC", "-shared", "-std=c++17",
    "-Wall", "-Wextra", "-Wno-unused-parameter", ...librarySources("cuda/cpu", ".cpp"), "-o", CPU_LIBRARY]));
}

function findNvcc(): string | null {
  const home = process.env.CUDA_HOME ?? process.env.CUDA_PATH;
  for (const candidate of [home && join(home, "bin/nvcc"), "/usr/local/cuda/bin/nvcc"]) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  return Bun.which("nvcc");
}

// One nvcc per source file, in parallel, then one link.
async function buildCuda(nvcc: string): Promise<void> {
  const gencode = CUDA_ARCHS.flatMap((a) => ["-gencode", `arch=compute_${a},code=sm_${a}`]);
  const wgmmaDefine = CUDA_ARCHS.includes("90a") ? ["-DMSGL_WGMMA_BUILT"] : []; // the wgmma prefill kernel exists
  const sources = librarySources("cuda/kernels", ".cu");
  const objects = sources.map((s) => join("build/cuda_obj", s.replace(/^cuda\/kernels\//, "").replace(/\.cu$/, ".o")));
  mkdirSync(join(PROJECT_ROOT, "build/cuda_obj"), { recursive: true });
  await timed(CUDA_LIBRARY, "cuda/kernels", async () => {
    await Promise.all(sources.map((s, i) => run([nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
      "-lineinfo", ...gencode, ...wgmmaDefine, "-c", s, "-o", objects[i]])));
    await run([nvcc, "-shared", ...gencode, ...objects, "-lcudart", "-o", CUDA_LIBRARY]);
  });
}

const only = process.argv[2]; // "cpu" | "cuda" | undefined (both)
if (only !== "cuda") await buildCpu();
if (only !== "cpu") {
  const nvcc = findNvcc();
  if (nvcc) await buildCuda(nvcc);
  else if (only === "cuda") {
    console.error("nvcc not found: install the CUDA toolkit or set CUDA_HOME, then run `bun run build cuda`");
    process.exit(1);
  } else console.log("nvcc not found: skipping build/libmsgl_cuda.so (the CPU backend works without it)");
}
