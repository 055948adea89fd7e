// The sglang.bench_serving set of serving metrics from per-request outcomes, and its printed form.
import { summarize, type Summary } from "./stats.ts";
import type { RequestOutcome } from "./stream_request.ts";

export interface ServingMetrics {
  completed: number;
  failed: number;
  duration_s: number;
  total_input_tokens: number;
  total_output_tokens: number;
  request_throughput: number; // completed requests / s
  input_throughput: number; // tok/s
  output_throughput: number; // tok/s
  total_throughput: number; // tok/s
  concurrency: number; // sum of E2E / duration: requests in flight on average
  e2e: Summary;
  ttft: Summary;
  tpot: Summary; // (E2E − TTFT) / (output tokens − 1), requests with ≥ 2 tokens
  itl: Summary; // every gap between token chunks
  errors: string[]; // the first few distinct errors
}

export function servingMetrics(outcomes: RequestOutcome[], durationS: number): ServingMetrics {
  const ok = outcomes.filter((o) => o.ok);
  const inputTokens = ok.reduce((a, o) => a + o.promptTokens, 0);
  const outputTokens = ok.reduce((a, o) => a + o.outputTokens, 0);
  const tpot = ok.filter((o) => o.outputTokens > 1).map((o) => (o.e2eMs - o.ttftMs) / (o.outputTokens - 1));
  return {
    completed: ok.length,
    failed: outcomes.length - ok.length,
    duration_s: durationS,
    total_input_tokens: inputTokens,
    total_output_tokens: outputTokens,
    request_throughput: ok.length / durationS,
    input_throughput: inputTokens / durationS,
    output_throughput: outputTokens / durationS,
    total_throughput: (inputTokens + outputTokens) / durationS,
    concurrency: ok.reduce((a, o) => a + o.e2eMs, 0) / 1000 / durationS,
    e2e: summarize(ok.map((o) => o.e2eMs)),
    ttft: summarize(ok.map((o) => o.ttftMs)),
    tpot: summarize(tpot),
    itl: summarize(ok.flatMap((o) => o.itlMs)),
    errors: [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.error ?? "unknown"))].slice(0, 5),
  };
}

const line = (name: string, value: string) => `${name.padEnd(40)}${value.padStart(12)}`;
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");

export function formatServingMetrics(m: ServingMetrics, heading: string): string {
  const rows = [
    `${"=".repeat(16)} Serving Benchmark Result ${"=".repeat(12)}`,
    heading,
    line("Successful requests:", String(m.completed)),
    line("Failed requests:", String(m.failed)),
    line("Benchmark duration (s):", m.duration_s.toFixed(2)),
    line("Total input tokens:", String(m.total_input_tokens)),
    line("Total generated tokens:", String(m.total_output_tokens)),
    line("Request throughput (req/s):", m.request_throughput.toFixed(2)),
    line("Input token throughput (tok/s):", m.input_throughput.toFixed(2)),
    line("Output token throughput (tok/s):", m.output_throughput.toFixed(2)),
    line("Total token throughput (tok/s):", m.total_throughput.toFixed(2)),
    line("Concurrency (sum of E2E / duration):", m.concurrency.toFixed(2)),
  ];
  const section = (title: string, s: Summary, keys: (keyof Summary)[]) => {
    rows.push(`${"-".repeat(12)} ${title} ${"-".repeat(Math.max(2, 40 - title.length))}`);
    for (const k of keys) rows.push(line(`${k.replace("_ms", "").replace(/^./, (c) => c.toUpperCase())} ${title} (ms):`, ms(s[k])));
  };
  section("E2E Latency", m.e2e, ["mean_ms", "median_ms", "p99_ms"]);
  section("TTFT", m.ttft, ["mean_ms", "median_ms", "p99_ms"]);
  section("TPOT", m.tpot, ["mean_ms", "median_ms", "p99_ms"]);
  section("ITL", m.itl, ["mean_ms", "median_ms", "p95_ms", "p99_ms", "max_ms"]);
  rows.push("=".repeat(54));
  for (const e of m.errors) rows.push(`error: ${e}`);
  return rows.join("\n");
}
