// bench/results.jsonl: one JSON object per measured run, as the bench commands print with --json (and
// append with --record); bench/hf_baseline.py writes the offline shape. The charts and the tables of
// bench/RESULTS.md are drawn from it; when a configuration was measured more than once, the latest row wins.
import { existsSync, readFileSync } from "node:fs";

interface Head {
  bench: "offline" | "serving" | "latency" | "kernels";
  engine: string;
  date: string;
  hardware: string;
  device: string;
  command: string;
  load_avg_1m?: number;
  model?: string;
}

export interface OfflineRow extends Head {
  bench: "offline";
  model: string;
  dummy_weight: boolean;
  overlap: boolean | null;
  num_requests: number;
  input_tokens: number;
  output_tokens: number;
  duration_s: number;
  output_throughput: number;
  total_throughput: number;
  roofline_output_throughput: number | null;
  config?: { tp?: number };
}

interface Summary {
  mean_ms: number | null;
  median_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
}

export interface ServingRow extends Head {
  bench: "serving";
  model: string;
  dataset: string;
  num_prompts: number;
  request_rate: number | "inf";
  max_concurrency: number | null;
  completed: number;
  failed: number;
  duration_s: number;
  request_throughput: number;
  output_throughput: number;
  total_throughput: number;
  concurrency: number;
  e2e: Summary;
  ttft: Summary;
  tpot: Summary;
  itl: Summary;
}

export interface LatencyRow extends Head {
  bench: "latency";
  model: string;
  tp?: number;
  prefill: { batch: number; input_len: number; ms: number; roofline_ms: number | null };
  decode: { batch: number; context: number; step_ms: number; graph_replay: boolean; roofline_ms: number | null }[];
}

export interface KernelsRow extends Head {
  bench: "kernels";
  sizes: string;
  torch_version: string | null;
  cases: { name: string; us: number; roofline_pct: number | null; torch: { impl: string; us: number | null; ours_speedup: number | null }[] }[];
}

export type ResultRow = OfflineRow | ServingRow | LatencyRow | KernelsRow;

export function readResults(path: string): ResultRow[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").split("\n").map((l) => l.trim()).filter(Boolean).map((l, i) => {
    try {
      return JSON.parse(l) as ResultRow;
    } catch {
      throw new Error(`${path}:${i + 1} is not JSON`);
    }
  });
}

/** The model's short name: the last path segment of a directory or hub id. */
export function modelName(model: string | undefined): string {
  return (model ?? "?").replace(/\/+$/, "").split("/").pop() ?? "?";
}

/** Keeps the last row of each key, in first-seen order of the keys. */
export function latestBy<T>(rows: T[], key: (r: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const r of rows) {
    const k = key(r);
    byKey.delete(k);
    byKey.set(k, r);
  }
  return [...byKey.values()];
}

/** Tensor-parallel ranks of a row (rows written before --tp was recorded ran on one GPU). */
export const tpOf = (r: OfflineRow | LatencyRow) => ("tp" in r ? r.tp : undefined) ?? ("config" in r ? r.config?.tp : undefined) ?? 1;

/** "Qwen3-8B (dummy) × TP 2": the model column of the tables and charts. */
export const modelLabel = (r: OfflineRow | LatencyRow & { dummy_weight?: boolean }) =>
  `${modelName(r.model)}${r.dummy_weight ? " (dummy)" : ""}${tpOf(r) > 1 ? ` × TP ${tpOf(r)}` : ""}`;

export const offlineKey = (r: OfflineRow) => [r.hardware, modelName(r.model), r.engine, r.overlap, r.dummy_weight, r.num_requests, tpOf(r)].join("|");
export const servingKey = (r: ServingRow) =>
  [r.hardware, modelName(r.model), r.dataset, r.num_prompts, r.request_rate, r.max_concurrency].join("|");
export const latencyKey = (r: LatencyRow) => [r.hardware, modelName(r.model), r.engine, tpOf(r)].join("|");
export const kernelsKey = (r: KernelsRow) => [r.hardware, r.sizes].join("|");
