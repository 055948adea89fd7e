// `bun run bench:kernels`: mitata micro-benchmarks of our ops through Backend.ops at real model shapes
// (bench/kernel_cases.ts), with % of the GPU's roofline, and beside them PyTorch's time for the same case
// from bench/torch_ref.py's JSON (--torch-json), as a ratio. On the GPU one sample launches the op `reps`
// times back to back and synchronizes once, so per-op times exclude the host round trip.
//
//   bun run bench:kernels --print-cases > cases.json && python3 bench/torch_ref.py --cases cases.json --out torch.json
//   bun run bench:kernels --torch-json torch.json
import { existsSync, readFileSync } from "node:fs";
import { measure } from "mitata";
import type { Backend } from "../src/backend/backend.ts";
import { openBackend } from "./device_backend.ts";
import * as flag from "./flags.ts";
import { defaultDevice, gpuName, hardwareLabel } from "./hardware.ts";
import { type KernelCase, kernelCases } from "./kernel_cases.ts";
import { prepareCase } from "./kernel_runners.ts";
import { appendRecord, recordHead } from "./record.ts";
import { gpuSpec, type GpuSpec } from "./roofline.ts";
import * as units from "./units.ts";

const FLAGS: flag.FlagDef[] = [
  flag.DEVICE_FLAG,
  { name: "sizes", value: "full|smoke", help: "Case list: real shapes, or small ones for a CPU smoke run (default: full on cuda, smoke on cpu)" },
  { name: "filter", value: "regex", help: "Only cases whose name matches" },
  { name: "min-time-ms", value: "ms", help: "mitata's minimum measuring time per case (default: 500 on cuda, 50 on cpu)" },
  { name: "torch-json", value: "file", help: "bench/torch_ref.py's output for the same cases: adds PyTorch's times and ratios" },
  { name: "print-cases", help: "Print the case list as JSON (the input of bench/torch_ref.py) and exit" },
  ...flag.outputFlags("table"),
];

interface TorchResult {
  name: string;
  impl: string; // e.g. "sdpa_flash", "sdpa_cudnn", "cublas", "sort_topk_topp"
  us: number | null;
  error?: string;
}

interface TorchFile {
  gpu: string;
  torch: string;
  results: TorchResult[];
}

interface CaseResult {
  name: string;
  op: string;
  shape: Record<string, number>;
  bytes: number;
  flops: number;
  us: number; // median per op
  reps: number; // ops per sample
  samples: number;
  bandwidth: number; // bytes / s achieved
  flop_rate: number; // FLOP / s achieved
  roofline_us: number | null;
  roofline_pct: number | null;
  torch: { impl: string; us: number | null; ours_speedup: number | null; error?: string }[];
}

/** Per-op time in µs: mitata's median sample of `reps` launches followed by one synchronize. */
async function timeCase(backend: Backend, run: () => void, minTimeMs: number): Promise<{ us: number; reps: number; samples: number }> {
  run();
  backend.synchronize();
  let reps = 1;
  if (backend.kind === "cuda") {
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) run();
    backend.synchronize();
    const perOpUs = ((performance.now() - t0) * 1000) / 10;
    reps = Math.max(1, Math.min(200, Math.ceil(200 / perOpUs))); // ≥ ~200 µs of GPU work per sample
  }
  const stats = await measure(() => {
    for (let i = 0; i < reps; i++) run();
    backend.synchronize();
  }, { min_cpu_time: minTimeMs * 1e6, min_samples: 5 });
  return { us: stats.p50 / 1000 / reps, reps, samples: stats.ticks };
}

function rooflineUs(c: KernelCase, gpu: GpuSpec | null): number | null {
  return gpu ? 1e6 * Math.max(c.bytes / gpu.memoryBandwidth, c.flops / gpu.bf16Flops) : null;
}

function readTorch(path: string): TorchFile {
  if (!existsSync(path)) throw new flag.BenchFlagError(`--torch-json ${path} does not exist`);
  return JSON.parse(readFileSync(path, "utf8")) as TorchFile;
}

function printTable(results: CaseResult[], say: (line: string) => void): void {
  const head = `${"case".padEnd(40)} ${"ours".padStart(10)} ${"achieved".padStart(22)} ${"% roofline".padStart(10)}  PyTorch (ours faster by ×)`;
  say(head);
  for (const r of results) {
    const achieved = r.op === "gemm" || r.op === "attention_prefill" ? units.flopRate(r.flop_rate) : units.bandwidth(r.bandwidth);
    const torch = r.torch.map((t) => t.us === null ? `${t.impl} error` : `${t.impl} ${units.duration(t.us)} (${t.ours_speedup!.toFixed(2)}×)`).join(", ");
    say(`${r.name.padEnd(40)} ${units.duration(r.us).padStart(10)} ${achieved.padStart(22)} ` +
      `${(r.roofline_pct === null ? "n/a" : `${r.roofline_pct.toFixed(0)}%`).padStart(10)}  ${torch}`);
  }
}

async function main(): Promise<void> {
  const f = flag.parseFlags(process.argv.slice(2), "bun run bench:kernels", "op micro-benchmarks at model shapes, beside PyTorch", FLAGS);
  const device = flag.str(f, "device") === undefined ? defaultDevice() : flag.choice(f, "device", ["cpu", "cuda"] as const);
  const sizes = flag.str(f, "sizes") === undefined ? (device === "cuda" ? "full" : "smoke") : flag.choice(f, "sizes", ["full", "smoke"] as const);
  const filter = new RegExp(flag.str(f, "filter") ?? ".");
  const cases = kernelCases(sizes).filter((c) => filter.test(c.name));
  if (flag.bool(f, "print-cases")) {
    console.log(JSON.stringify({ sizes, cases }, null, 1));
    return;
  }
  const json = flag.bool(f, "json");
  const say = (line: string) => (json ? console.error(line) : console.log(line));
  const minTimeMs = flag.str(f, "min-time-ms") === undefined ? (device === "cuda" ? 500 : 50) : flag.num(f, "min-time-ms", 1);
  const torchPath = flag.str(f, "torch-json");
  const torch = torchPath ? readTorch(torchPath) : null;
  const hardware = hardwareLabel(device);
  if (torch && torch.gpu !== hardware) say(`note: PyTorch's times were taken on ${torch.gpu}, ours on ${hardware}`);
  const gpu = device === "cuda" ? gpuSpec(gpuName()) : null;

  say(`bench:kernels — ${cases.length} ${sizes} cases on ${hardware}; median of mitata samples (≥ ${minTimeMs} ms per case); ` +
    `roofline ${gpu ? `${units.bandwidth(gpu.memoryBandwidth)}, ${units.flopRate(gpu.bf16Flops)}` : `n/a (${device === "cpu" ? "cpu" : "no spec"})`}` +
    (torch ? `; PyTorch ${torch.torch}` : ""));
  const backend = openBackend(device);
  const results: CaseResult[] = [];
  try {
    for (const c of cases) {
      const prepared = prepareCase(backend, c);
      let timed: { us: number; reps: number; samples: number };
      try {
        timed = await timeCase(backend, prepared.run, minTimeMs);
      } finally {
        prepared.free();
      }
      const roof = rooflineUs(c, gpu);
      const torchRows = (torch?.results ?? []).filter((t) => t.name === (c.torchCase ?? c.name)).map((t) => ({
        impl: t.impl, us: t.us, ours_speedup: t.us === null ? null : t.us / timed.us, ...(t.error ? { error: t.error } : {}),
      }));
      const r: CaseResult = {
        name: c.name, op: c.op, shape: c.shape, bytes: c.bytes, flops: c.flops, us: timed.us, reps: timed.reps, samples: timed.samples,
        bandwidth: c.bytes / (timed.us * 1e-6), flop_rate: c.flops / (timed.us * 1e-6),
        roofline_us: roof, roofline_pct: roof === null ? null : (100 * roof) / timed.us, torch: torchRows,
      };
      results.push(r);
    }
  } finally {
    backend.close();
  }
  printTable(results, say);
  const row = { ...recordHead("kernels", device, hardware, "bench:kernels"), sizes, torch_version: torch?.torch ?? null, gpu_spec: gpu, cases: results };
  if (json) console.log(JSON.stringify(row));
  const record = flag.str(f, "record");
  if (record) appendRecord(record, row);
}

flag.runMain(main);
