// `bun run bench:charts`: reads bench/results.jsonl, draws the offline-throughput and serving-latency charts
// as SVG (vega-lite compiled to vega, rendered headless: no canvas, no native code), and refreshes the tables
// of bench/RESULTS.md from the same rows.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import * as flag from "./flags.ts";
import { latestBy, modelLabel, modelName, type OfflineRow, offlineKey, readResults, type ResultRow, type ServingRow, servingKey } from "./results_file.ts";
import { fillResults } from "./results_tables.ts";

const BENCH_DIR = import.meta.dir;
const FLAGS: flag.FlagDef[] = [
  { name: "results", value: "file", help: "Rows to draw", default: join(BENCH_DIR, "results.jsonl") },
  { name: "out-dir", value: "dir", help: "Where the SVG files go", default: join(BENCH_DIR, "charts") },
  { name: "results-md", value: "file", help: "The Markdown file whose result tables are refreshed", default: join(BENCH_DIR, "RESULTS.md") },
];

const panel = (r: ResultRow) => `${modelName(r.model)}${"dummy_weight" in r && r.dummy_weight ? " (dummy)" : ""} · ${r.hardware}`;

const SERIES_RANK: Record<string, number> = { "minisgl, overlap on": 0, "minisgl, overlap off": 1, roofline: 99 };
const rank = (series: string) => SERIES_RANK[series] ?? 50; // baselines between ours and the roofline

export function offlineChart(rows: ResultRow[]): TopLevelSpec | null {
  const offline = latestBy(rows.filter((r): r is OfflineRow => r.bench === "offline"), offlineKey);
  if (offline.length === 0) return null;
  const label = modelLabel;
  const values: { hardware: string; model: string; series: string; tokens: number }[] = [];
  for (const r of offline) {
    const series = r.engine === "minisgl" ? `minisgl, overlap ${r.overlap ? "on" : "off"}` : r.engine;
    values.push({ hardware: r.hardware, model: label(r), series, tokens: r.output_throughput });
  }
  for (const r of latestBy(offline.filter((r) => r.roofline_output_throughput !== null), panel)) {
    values.push({ hardware: r.hardware, model: label(r), series: "roofline", tokens: r.roofline_output_throughput! });
  }
  // One order (and so one colour) per series on every chart: ours first, then the baseline, then the roofline.
  const present = new Set(values.map((v) => v.series));
  const seriesOrder = [...present].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const encoding = {
    x: { field: "model", type: "nominal", title: null, axis: { labelAngle: 0, labelLimit: 200 } },
    xOffset: { field: "series", type: "nominal", sort: seriesOrder },
    y: { field: "tokens", type: "quantitative", title: "output tokens / s" },
  } as const;
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Offline throughput (nano-vllm workload)", subtitle: "output tokens / wall time; roofline = bandwidth/compute bound of the same workload" },
    data: { values },
    facet: { column: { field: "hardware", type: "nominal", title: null, header: { labelLimit: 400 } } },
    resolve: { scale: { y: "independent", x: "independent" } },
    spec: {
      width: { step: 24 }, // per bar
      height: 240,
      layer: [
        { mark: "bar", encoding: { ...encoding, color: { field: "series", type: "nominal", title: null, scale: { domain: seriesOrder },
          legend: { orient: "bottom", labelLimit: 300 } } } },
        { mark: { type: "text", dy: -6, fontSize: 8 }, encoding: { ...encoding, text: { field: "tokens", type: "quantitative", format: ",.0f" } } },
      ],
    },
  } as TopLevelSpec;
}

export function servingChart(rows: ResultRow[]): TopLevelSpec | null {
  const serving = latestBy(rows.filter((r): r is ServingRow => r.bench === "serving"), servingKey);
  if (serving.length === 0) return null;
  const rates = serving.map((r) => r.request_rate).filter((x): x is number => x !== "inf");
  const infAt = (rates.length ? Math.max(...rates) : 1) * 2;
  const values = serving.flatMap((r) => {
    const common = { panel: panel(r), rate: String(r.request_rate), order: r.request_rate === "inf" ? infAt : r.request_rate };
    return [
      { ...common, metric: "TTFT", stat: "median", ms: r.ttft.median_ms },
      { ...common, metric: "TTFT", stat: "p99", ms: r.ttft.p99_ms },
      { ...common, metric: "ITL", stat: "median", ms: r.itl.median_ms },
      { ...common, metric: "ITL", stat: "p99", ms: r.itl.p99_ms },
    ].filter((v) => v.ms !== null && v.ms > 0);
  });
  const chart = (metric: string) => ({
    title: `${metric} (ms, log scale)`,
    transform: [{ filter: `datum.metric === '${metric}'` }],
    mark: { type: "line", point: true },
    width: 300,
    height: 240,
    encoding: {
      x: { field: "rate", type: "ordinal", title: "request rate (req/s)", sort: { field: "order" }, axis: { labelAngle: 0 } },
      y: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "ms" },
      color: { field: "panel", type: "nominal", title: null, legend: { orient: "bottom", labelLimit: 400 } },
      strokeDash: { field: "stat", type: "nominal", title: null },
    },
  });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: { text: "Serving latency vs request rate (bench:serve, streaming)", subtitle: "time to first token and inter-token latency" },
    data: { values },
    hconcat: [chart("TTFT"), chart("ITL")],
  } as TopLevelSpec;
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec, { logger: vega.logger(vega.Error) }).spec), { renderer: "none" });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

async function main(): Promise<void> {
  const f = flag.parseFlags(process.argv.slice(2), "bun run bench:charts", "SVG charts and RESULTS.md tables from bench/results.jsonl", FLAGS);
  const resultsPath = flag.requiredStr(f, "results");
  const outDir = flag.requiredStr(f, "out-dir");
  const mdPath = flag.requiredStr(f, "results-md");
  const rows = readResults(resultsPath);
  console.log(`${rows.length} rows in ${relative(process.cwd(), resultsPath) || resultsPath}`);
  mkdirSync(outDir, { recursive: true });
  for (const [name, spec] of [["offline", offlineChart(rows)], ["serving", servingChart(rows)]] as const) {
    const path = join(outDir, `${name}.svg`);
    if (!spec) {
      console.log(`no ${name} rows: ${relative(process.cwd(), path)} not drawn`);
      continue;
    }
    writeFileSync(path, await renderSvg(spec));
    console.log(`wrote ${relative(process.cwd(), path)}`);
  }
  writeFileSync(mdPath, fillResults(readFileSync(mdPath, "utf8"), rows));
  console.log(`refreshed the tables of ${relative(process.cwd(), mdPath)}`);
}

if (import.meta.main) flag.runMain(main);
