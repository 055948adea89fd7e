// What a benchmark ran on, in words: the GPU's name from nvidia-smi, or the CPU's model name and core count.
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { selectDevice } from "../src/device_select.ts";

/** Name of the first visible GPU as nvidia-smi prints it ("NVIDIA H100 80GB HBM3"), or null without one. */
export function gpuName(): string | null {
  if (Bun.which("nvidia-smi") === null) return null;
  const out = Bun.spawnSync(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]);
  if (out.exitCode !== 0) return null;
  const names = out.stdout.toString().split("\n").map((l) => l.trim()).filter(Boolean);
  const visible = process.env.CUDA_VISIBLE_DEVICES?.split(",")[0];
  const index = visible !== undefined && /^\d+$/.test(visible) ? Number(visible) : 0;
  return names[index] ?? names[0] ?? null;
}

export function cpuModelName(): string {
  if (existsSync("/proc/cpuinfo")) {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"));
    if (line) return line.split(":")[1].trim();
  }
  return "unknown CPU";
}

export function cpuCores(): number {
  return availableParallelism();
}

/** "cpu: AMD EPYC (2 cores)" on the CPU backend; the GPU's name on cuda. */
export function hardwareLabel(device: "cpu" | "cuda"): string {
  if (device === "cuda") return gpuName() ?? "cuda: no GPU visible to nvidia-smi";
  return `cpu: ${cpuModelName()} (${cpuCores()} cores)`;
}

/** The default device, chosen as `bun run serve --device auto` chooses (src/device_select.ts). */
export function defaultDevice(): "cpu" | "cuda" {
  return selectDevice("auto").device;
}
