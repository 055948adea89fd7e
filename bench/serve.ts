// `bun run bench:serve`: a load generator for any OpenAI-compatible server (ours by default): random
// token-id prompts or a ShareGPT file, Poisson arrivals at --request-rate (inf: all at once), at most
// --max-concurrency in flight, streaming; reports the metrics sglang.bench_serving reports.
import { existsSync } from "node:fs";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";
import { ensureHttpRequestCap } from "./connection_cap.ts";
import * as flag from "./flags.ts";
import { cpuCores, cpuModelName, gpuName } from "./hardware.ts";
import { RequestProgress } from "./progress.ts";
import { PyRandom } from "./py_random.ts";
import { appendRecord, recordHead } from "./record.ts";
import { type BenchRequest, randomRequests, shareGptRequests } from "./serve_dataset.ts";
import { formatServingMetrics, servingMetrics } from "./serve_report.ts";
import { type Endpoint, type RequestOutcome, streamRequest } from "./stream_request.ts";

const FLAGS: flag.FlagDef[] = [
  { name: "base-url", value: "url", help: "Server address", default: "http://127.0.0.1:1919" },
  { name: "model", value: "name", help: "Model name sent in requests (default: the first of GET /v1/models)" },
  { name: "endpoint", value: "completions|chat", help: "API route; chat needs text prompts (--dataset)", default: "completions" },
  { name: "dataset", value: "file", help: "ShareGPT-format JSON (default: random token-id prompts)" },
  { name: "tokenizer", value: "dir", help: "Tokenizer directory for ShareGPT lengths (default: --model when it is a directory)" },
  { name: "sharegpt-output-len", value: "n", help: "Fixed output length for ShareGPT prompts (default: the reply's length)" },
  { name: "random-input-len", value: "min,max", help: "Random prompt length range in tokens", default: "100,1024" },
  { name: "random-output-len", value: "min,max", help: "Random output length range in tokens", default: "100,1024" },
  { name: "num-prompts", value: "n", help: "Requests", default: "256" },
  { name: "request-rate", value: "r|inf", help: "Poisson arrival rate in requests/s; inf sends all at once", default: "inf" },
  { name: "max-concurrency", value: "n", help: "Requests in flight at most (default: no limit)" },
  { name: "seed", value: "n", help: "Seed of prompts and arrivals (CPython random.seed)", default: "1" },
  { name: "temperature", value: "t", help: "Sampling temperature (ignore_eos is always set)", default: "0" },
  { name: "api-key", value: "key", help: "Bearer token" },
  { name: "warmup-requests", value: "n", help: "Untimed requests (16 output tokens) before the run", default: "1" },
  { name: "server-hardware", value: "label", help: "What the server runs on, for the report (default: this machine's GPU or CPU for a loopback URL)" },
  ...flag.outputFlags("table"),
];

class Semaphore {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

function requestRate(f: flag.FlagValues): number {
  const raw = flag.str(f, "request-rate") ?? "inf";
  const rate = raw === "inf" ? Infinity : Number(raw);
  if (!(rate > 0)) throw new flag.BenchFlagError(`--request-rate must be a number > 0 or inf (got ${JSON.stringify(raw)})`);
  return rate;
}

async function modelName(baseUrl: string, apiKey: string | null): Promise<string> {
  const res = await fetch(`${baseUrl}/v1/models`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  if (!res.ok) throw new Error(`GET ${baseUrl}/v1/models answered ${res.status}; pass --model`);
  const id = ((await res.json()) as { data?: { id?: string }[] }).data?.[0]?.id;
  if (!id) throw new Error(`GET ${baseUrl}/v1/models lists no model; pass --model`);
  return id;
}

function serverHardware(f: flag.FlagValues, baseUrl: string): string {
  const given = flag.str(f, "server-hardware");
  if (given) return given;
  const host = new URL(baseUrl).hostname;
  if (!["127.0.0.1", "localhost", "::1", "[::1]"].includes(host)) return "unknown (pass --server-hardware)";
  return gpuName() ?? `cpu: ${cpuModelName()} (${cpuCores()} cores)`;
}

async function main(): Promise<void> {
  const f = flag.parseFlags(process.argv.slice(2), "bun run bench:serve", "load generator for OpenAI-compatible servers", FLAGS);
  const numPrompts = flag.int(f, "num-prompts", 1);
  const maxConcurrency = flag.optionalInt(f, "max-concurrency", 1);
  const rate = requestRate(f);
  await ensureHttpRequestCap(maxConcurrency ?? numPrompts);

  const baseUrl = flag.requiredStr(f, "base-url").replace(/\/+$/, "");
  const apiKey = flag.str(f, "api-key") ?? null;
  const model = flag.str(f, "model") ?? (await modelName(baseUrl, apiKey));
  const endpoint: Endpoint = {
    baseUrl, model, apiKey, kind: flag.choice(f, "endpoint", ["completions", "chat"] as const), temperature: flag.num(f, "temperature", 0),
  };
  const seed = flag.int(f, "seed", 0);
  const random = new PyRandom(seed);
  const datasetPath = flag.str(f, "dataset");
  let requests: BenchRequest[];
  let datasetLabel: string;
  if (datasetPath) {
    const tokenizerDir = flag.str(f, "tokenizer") ?? (existsSync(model) ? model : undefined);
    if (!tokenizerDir) throw new flag.BenchFlagError("--dataset needs --tokenizer <dir> to count prompt and reply tokens");
    const fixed = flag.optionalInt(f, "sharegpt-output-len", 2);
    requests = await shareGptRequests(datasetPath, numPrompts, await TextTokenizer.load(tokenizerDir), random, fixed);
    datasetLabel = `sharegpt ${datasetPath}`;
  } else {
    if (endpoint.kind === "chat") throw new flag.BenchFlagError("--endpoint chat needs text prompts: pass --dataset");
    const inputLen = flag.range(f, "random-input-len", 1);
    const outputLen = flag.range(f, "random-output-len", 1);
    requests = randomRequests(numPrompts, inputLen, outputLen, random);
    datasetLabel = `random token ids, input ${inputLen.join("–")}, output ${outputLen.join("–")} tokens`;
  }
  const json = flag.bool(f, "json");
  const say = (line: string) => (json ? console.error(line) : console.log(line));
  const hardware = serverHardware(f, baseUrl);

  for (let i = 0; i < flag.int(f, "warmup-requests", 0); i++) {
    const w = await streamRequest(endpoint, requests[i % requests.length], Math.min(16, requests[i % requests.length].outputLen));
    if (!w.ok) throw new Error(`warm-up request failed: ${w.error}`);
  }
  // SGLang's route: start from an empty prefix cache where the server has one (others answer 404; fine).
  const flushed = await fetch(`${baseUrl}/flush_cache`, { method: "POST", headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} })
    .then((r) => r.ok, () => false);

  const limit = maxConcurrency === undefined ? null : new Semaphore(maxConcurrency);
  const progress = new RequestProgress(numPrompts, "bench:serve");
  const started = performance.now();
  let arrival = 0; // seconds after start
  const outcomes: Promise<RequestOutcome>[] = [];
  for (const r of requests) {
    if (Number.isFinite(rate)) {
      const wait = started + arrival * 1000 - performance.now();
      if (wait > 0) await Bun.sleep(wait);
      arrival += random.expovariate(rate);
    }
    outcomes.push((async () => {
      await limit?.acquire();
      try {
        const o = await streamRequest(endpoint, r);
        progress.finished(o.outputTokens);
        return o;
      } finally {
        limit?.release();
      }
    })());
  }
  const results = await Promise.all(outcomes);
  const duration = (performance.now() - started) / 1000;
  const metrics = servingMetrics(results, duration);
  const rateLabel = Number.isFinite(rate) ? `${rate} req/s (Poisson)` : "inf (all at once)";
  const heading = `${baseUrl} model '${model}' on ${hardware}; ${numPrompts} prompts (${datasetLabel}); request rate ${rateLabel}; ` +
    `max concurrency ${maxConcurrency ?? "none"}; prefix cache flushed: ${flushed ? "yes" : "no"}`;
  say(formatServingMetrics(metrics, heading));
  const row = {
    ...recordHead("serving", hardware.startsWith("cpu:") ? "cpu" : "cuda", hardware, "bench:serve"),
    base_url: baseUrl,
    model,
    endpoint: endpoint.kind,
    dataset: datasetLabel,
    num_prompts: numPrompts,
    request_rate: Number.isFinite(rate) ? rate : "inf",
    max_concurrency: maxConcurrency ?? null,
    seed,
    temperature: endpoint.temperature,
    ...metrics,
  };
  if (json) console.log(JSON.stringify(row));
  const record = flag.str(f, "record");
  if (record) appendRecord(record, row);
  if (metrics.completed === 0) throw new Error("no request succeeded");
}

flag.runMain(main);
