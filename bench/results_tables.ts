// The tables of bench/RESULTS.md, drawn from bench/results.jsonl: every figure with its date, hardware,
// the roofline beside it where the hardware has one, and the command that reproduces it.
import {
  type KernelsRow, kernelsKey, type LatencyRow, latencyKey, latestBy, modelLabel, modelName, type OfflineRow, offlineKey, type ResultRow,
  type ServingRow, servingKey,
} from "./results_file.ts";
import * as units from "./units.ts";

const fixed = (x: number | null | undefined, digits = 1) => (x === null || x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits));
const code = (s: string) => `\`${s.replaceAll("|", "\\|")}\``;
const load = (r: ResultRow) => (r.device === "cpu" && r.load_avg_1m !== undefined ? ` (load ${r.load_avg_1m})` : "");

function table(head: string[], rows: string[][]): string {
  if (rows.length === 0) return "_no rows yet_";
  return [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

export function offlineTable(all: ResultRow[]): string {
  const rows = latestBy(all.filter((r): r is OfflineRow => r.bench === "offline"), offlineKey);
  return table(
    ["date", "hardware", "model", "engine", "overlap", "requests", "output tok/s", "total tok/s", "duration s", "roofline output tok/s", "command"],
    rows.map((r) => [
      r.date, r.hardware + load(r), modelLabel(r), r.engine,
      r.overlap === null ? "—" : r.overlap ? "on" : "off", String(r.num_requests), fixed(r.output_throughput), fixed(r.total_throughput),
      fixed(r.duration_s, 2),
      r.roofline_output_throughput === null ? "n/a" : `${fixed(r.roofline_output_throughput, 0)} (${fixed((100 * r.output_throughput) / r.roofline_output_throughput, 0)}%)`,
      code(r.command),
    ]),
  );
}

export function servingTable(all: ResultRow[]): string {
  const rows = latestBy(all.filter((r): r is ServingRow => r.bench === "serving"), servingKey);
  return table(
    ["date", "hardware", "model", "rate req/s", "ok/failed", "req/s", "output tok/s", "concurrency", "TTFT mean/median/p99 ms",
      "TPOT mean/median/p99 ms", "ITL mean/median/p95/p99/max ms", "command"],
    rows.map((r) => [
      r.date, r.hardware + load(r), modelName(r.model), String(r.request_rate), `${r.completed}/${r.failed}`, fixed(r.request_throughput, 2),
      fixed(r.output_throughput), fixed(r.concurrency, 1),
      [r.ttft.mean_ms, r.ttft.median_ms, r.ttft.p99_ms].map((x) => fixed(x)).join(" / "),
      [r.tpot.mean_ms, r.tpot.median_ms, r.tpot.p99_ms].map((x) => fixed(x, 2)).join(" / "),
      [r.itl.mean_ms, r.itl.median_ms, r.itl.p95_ms, r.itl.p99_ms, r.itl.max_ms].map((x) => fixed(x, 2)).join(" / "),
      code(r.command),
    ]),
  );
}

export function latencyTable(all: ResultRow[]): string {
  const rows = latestBy(all.filter((r): r is LatencyRow => r.bench === "latency"), latencyKey);
  const vsRoof = (ms: number, roof: number | null) => (roof === null ? "n/a" : `${fixed(roof, 3)} (${fixed((100 * roof) / ms, 0)}%)`);
  return table(
    ["date", "hardware", "model", "step", "ms", "roofline ms (% of it)", "graph", "command"],
    rows.flatMap((r) => [
      [r.date, r.hardware + load(r), modelLabel(r), `prefill ${r.prefill.batch} × ${r.prefill.input_len}`, fixed(r.prefill.ms, 3),
        vsRoof(r.prefill.ms, r.prefill.roofline_ms), "—", code(r.command)],
      ...r.decode.map((d) => [r.date, r.hardware + load(r), modelLabel(r), `decode batch ${d.batch}, context ${d.context}`,
        fixed(d.step_ms, 3), vsRoof(d.step_ms, d.roofline_ms), d.graph_replay ? "yes" : "no", code(r.command)]),
    ]),
  );
}

export function kernelsTable(all: ResultRow[]): string {
  const runs = latestBy(all.filter((r): r is KernelsRow => r.bench === "kernels"), kernelsKey);
  if (runs.length === 0) return "_no rows yet_";
  return runs.map((r) => [
    `${r.date}, ${r.hardware}${load(r)}, ${r.sizes} sizes${r.torch_version ? `, PyTorch ${r.torch_version}` : ""}: \`${r.command}\``,
    "",
    table(["case", "ours", "% of roofline", "PyTorch (ours faster by ×)"], r.cases.map((c) => [
      c.name, units.duration(c.us), c.roofline_pct === null ? "n/a" : `${fixed(c.roofline_pct, 0)}%`,
      c.torch.length === 0 ? "—" : c.torch.map((t) => (t.us === null ? `${t.impl}: error` : `${t.impl} ${units.duration(t.us)} (${fixed(t.ours_speedup, 2)}×)`)).join(", "),
    ])),
  ].join("\n")).join("\n\n");
}

/** Replaces what lies between `<!-- results:NAME -->` and `<!-- /results:NAME -->` with a fresh table. */
export function fillResults(markdown: string, rows: ResultRow[]): string {
  const tables: Record<string, string> = {
    offline: offlineTable(rows), serving: servingTable(rows), latency: latencyTable(rows), kernels: kernelsTable(rows),
  };
  let out = markdown;
  for (const [name, body] of Object.entries(tables)) {
    const re = new RegExp(`(<!-- results:${name} -->)[\\s\\S]*?(<!-- /results:${name} -->)`);
    if (!re.test(out)) throw new Error(`RESULTS.md has no <!-- results:${name} --> … <!-- /results:${name} --> section`);
    out = out.replace(re, (_m, open: string, close: string) => `${open}\n${body}\n${close}`);
  }
  return out;
}
