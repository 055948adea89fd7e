// Ceilings of the GPUs we benchmark on (from ../shared/reference/performance-anchors.md), keyed by the name
// nvidia-smi prints, and the roofline time of a forward or of the whole offline workload on them.
import { forwardCost, type ModelCost } from "./model_cost.ts";

export interface GpuSpec {
  name: string; // as nvidia-smi prints it
  memoryBandwidth: number; // bytes/s a well-written kernel can stream
  bf16Flops: number; // dense bf16 FLOP/s a large GEMM reaches
  source: string;
}

export const GPU_SPECS: readonly GpuSpec[] = [
  {
    name: "NVIDIA H100 80GB HBM3",
    memoryBandwidth: 3.0e12,
    bf16Flops: 800e12,
    source: "measured on the lent H100 2026-11-22: read-only streaming 3.10 TB/s, copy 3.02 TB/s, cuBLASLt 8192³ ~798 " +
      "TFLOP/s; rooflines use 3.0 TB/s and 800 TFLOP/s (performance-anchors.md)",
  },
  {
    name: "NVIDIA H200",
    memoryBandwidth: 4.3e12,
    bf16Flops: 800e12,
    source: "~4.3 TB/s streaming (performance-anchors.md); FLOP/s taken equal to the H100's (same GH100 compute), " +
      "not measured on an H200",
  },
];

/** The spec of a GPU by its nvidia-smi name, or null when none is recorded (CPU, other GPUs). */
export function gpuSpec(name: string | null): GpuSpec | null {
  if (name === null) return null;
  return GPU_SPECS.find((g) => g.name === name.trim()) ?? null;
}

/** Lower bound on the time of one forward: whichever of bytes and FLOPs takes longer. */
export function forwardFloorSeconds(cost: ModelCost, gpu: GpuSpec, batch: number, newTokens: number, kvLen: number): number {
  const { flops, bytes } = forwardCost(cost, batch, newTokens, kvLen);
  return Math.max(bytes / gpu.memoryBandwidth, flops / gpu.bf16Flops);
}

export interface OfflineRequest {
  inputLen: number;
  outputLen: number;
}

export interface SchedulerLimits {
  maxRunningRequests: number;
  maxPrefillTokens: number; // chunk budget of one prefill step
}

/** The offline workload on the roofline, step by step as our scheduler runs it: prefill first (chunks of at
 * most maxPrefillTokens, one logit row per finished prompt), then decode of every running request; every
 * step at max(bytes/bandwidth, FLOPs/peak); KV assumed large enough to admit maxRunningRequests. */
export function offlineRooflineSeconds(cost: ModelCost, gpu: GpuSpec, requests: OfflineRequest[], limits: SchedulerLimits): number {
  const bw = gpu.memoryBandwidth;
  const peak = gpu.bf16Flops;
  const waiting = requests.map((r) => ({ ...r, prefilled: 0, generated: 0 }));
  let running: typeof waiting = [];
  let seconds = 0;
  while (waiting.length > 0 || running.length > 0) {
    if (waiting.length > 0 && running.length < limits.maxRunningRequests) {
      // One prefill step: chunks of waiting prompts up to the token budget.
      let budget = limits.maxPrefillTokens;
      let flops = 0;
      let kvRead = 0;
      while (budget > 0 && waiting.length > 0 && running.length < limits.maxRunningRequests) {
        const r = waiting[0];
        const chunk = Math.min(budget, r.inputLen - r.prefilled);
        const kvLen = r.prefilled + chunk;
        flops += chunk * cost.linearFlopsPerToken + (chunk * (kvLen - chunk) + (chunk * (chunk + 1)) / 2) * cost.attentionFlopsPerPair;
        kvRead += kvLen * cost.kvBytesPerToken;
        r.prefilled = kvLen;
        budget -= chunk;
        if (r.prefilled === r.inputLen) {
          flops += cost.lmHeadFlopsPerRow;
          r.generated = 1; // the prefill samples the first token
          running.push(waiting.shift()!);
        }
      }
      seconds += Math.max((cost.weightBytesPerStep + kvRead) / bw, flops / peak);
    } else {
      const batch = running.length;
      let kvTokens = 0;
      for (const r of running) kvTokens += r.inputLen + r.generated;
      const flops = batch * (cost.linearFlopsPerToken + cost.lmHeadFlopsPerRow) + kvTokens * cost.attentionFlopsPerPair;
      seconds += Math.max((cost.weightBytesPerStep + kvTokens * cost.kvBytesPerToken) / bw, flops / peak);
      for (const r of running) r.generated++;
    }
    running = running.filter((r) => r.generated < r.outputLen);
  }
  return seconds;
}
