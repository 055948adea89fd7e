// The four bench commands as subprocesses on the CPU with the tiny model at smoke sizes: each exits 0,
// prints its metrics, and its --json line parses with the keys the issue names; bench:serve runs against a
// real `bun run serve`, and past Bun's 256-connection cap against a slow fake server; bench:charts draws
// from the rows the others recorded.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { offlineWorkload } from "../bench/offline_workload.ts";
import { PyRandom } from "../bench/py_random.ts";
import { randomRequests } from "../bench/serve_dataset.ts";
import { fixtureDir } from "./helpers/reference.ts";
import { startServe, type ServerProcess } from "./helpers/server_process.ts";

const ROOT = join(import.meta.dir, "..");
let model: string;
let work: string;
let results: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function bunRun(script: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const proc = Bun.spawn(["bun", "run", script, ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) console.error(`bun run ${script} ${args.join(" ")} exited ${code}:\n${stdout}\n${stderr}`);
  return { code, stdout, stderr };
}

/** The last stdout line as JSON (the --json line). */
function jsonLine(run: Run): Record<string, any> {
  const lines = run.stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

beforeAll(async () => {
  model = await fixtureDir("tiny-qwen3");
  work = mkdtempSync(join(tmpdir(), "minisgl-bench-test-"));
  results = join(work, "results.jsonl");
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("bun run bench (offline)", () => {
  const args = () => ["--model", model, "--num-seqs", "6", "--input-len", "16,48", "--output-len", "4,12", "--seed", "3", "--record", results];

  test("prints throughput; --json has the issue's keys and every requested token", async () => {
    const human = await bunRun("bench", args().filter((a) => a !== "--record" && a !== results));
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/output throughput: [\d.]+ tok\/s\s+total throughput: [\d.]+ tok\/s/);
    expect(human.stdout).toContain("overlap scheduling on");
    expect(human.stdout).toContain("roofline: n/a (cpu)");

    const run = await bunRun("bench", [...args(), "--json"]);
    expect(run.code).toBe(0);
    const row = jsonLine(run);
    for (const k of ["output_throughput", "total_throughput", "duration_s", "gpu", "config"]) expect(row).toHaveProperty(k);
    const w = offlineWorkload(6, [16, 48], [4, 12], 3);
    expect(row.output_tokens).toBe(w.outputLens.reduce((a, b) => a + b, 0));
    expect(row.input_tokens).toBe(w.prompts.reduce((a, p) => a + p.length, 0));
    expect(row.output_throughput).toBeCloseTo(row.output_tokens / row.duration_s, 6);
    expect(row.gpu).toMatch(/^cpu: .+ \(\d+ cores\)$/);
    expect(row.overlap).toBe(true);
    expect(row.config).toMatchObject({ num_seqs: 6, input_len: [16, 48], output_len: [4, 12], seed: 3, temperature: 0.6, tp: 1 });
  }, 30_000);

  test("MINISGL_DISABLE_OVERLAP_SCHEDULING=1 is reported and kept in the command", async () => {
    const run = await bunRun("bench", [...args(), "--json"], { MINISGL_DISABLE_OVERLAP_SCHEDULING: "1" });
    expect(run.code).toBe(0);
    const row = jsonLine(run);
    expect(row.overlap).toBe(false);
    expect(row.command).toStartWith("MINISGL_DISABLE_OVERLAP_SCHEDULING=1 bun run bench --model");
  }, 30_000);

  test("--tp 2 runs the sharded engine and is recorded", async () => {
    const run = await bunRun("bench", [...args().filter((a) => a !== "--record" && a !== results), "--tp", "2", "--json"]);
    expect(run.code).toBe(0);
    expect(JSON.stringify(jsonLine(run))).toContain('"tp":2');
  }, 60_000);
});

describe("bun run bench:latency", () => {
  test("prefill and decode steps with their bytes; --json parses", async () => {
    const run = await bunRun("bench:latency", ["--model", model, "--batch", "1,4", "--context", "32,64", "--input-len", "32", "--steps", "2",
      "--warmup-steps", "1", "--json", "--record", results]);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/prefill 1 × 32 tokens: [\d.]+ ms/);
    expect(run.stderr).toContain("n/a (cpu)");
    const row = jsonLine(run);
    expect(row.prefill.ms).toBeGreaterThan(0);
    expect(row.decode.map((d: { batch: number; context: number }) => [d.batch, d.context])).toEqual([[1, 32], [1, 64], [4, 32], [4, 64]]);
    for (const d of row.decode) {
      expect(d.step_ms).toBeGreaterThan(0);
      expect(d.roofline_ms).toBeNull();
      expect(d.kv_bytes).toBe(d.batch * d.context * 2 * 2 * 2 * 32 * 2); // layers × K,V × kv heads × head dim × bf16
    }
  }, 30_000);

  test("--tp 2 runs the measurement on two rank Workers", async () => {
    const run = await bunRun("bench:latency", ["--model", model, "--batch", "2", "--context", "16", "--input-len", "8", "--steps", "1",
      "--warmup-steps", "0", "--tp", "2", "--json"]);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("× 2 tensor-parallel ranks");
    const row = jsonLine(run);
    expect(row.tp).toBe(2);
    expect(row.decode[0].step_ms).toBeGreaterThan(0);
  }, 30_000);

  test("--attn takes the server's kernel names; the CPU takes only auto", async () => {
    const cpuVariant = await bunRun("bench:latency", ["--model", model, "--device", "cpu", "--attn", "wgmma,split"]);
    expect(cpuVariant.code).not.toBe(0);
    expect(cpuVariant.stderr).toContain("--attn wgmma,split: the CPU backend has one attention kernel of each kind (only auto)");
    const unknown = await bunRun("bench:latency", ["--model", model, "--attn", "fastest"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('--attn must be auto or prefill,decode');
  }, 30_000);
});

describe("bun run bench:kernels", () => {
  test("every op kind at smoke sizes; --json parses; torch JSON merges as ratios", async () => {
    const filter = "rmsnorm|gemm qwen3-0.6b qkv m=1$|attention|argmax|sample top_p";
    const cases = await bunRun("bench:kernels", ["--print-cases", "--filter", filter]);
    expect(cases.code).toBe(0);
    const names: string[] = JSON.parse(cases.stdout).cases.map((c: { name: string }) => c.name);
    expect(names.length).toBe(6);
    // A torch_ref.py-shaped file (the times are made up: only the merge is under test).
    const torchJson = join(work, "torch.json");
    writeFileSync(torchJson, JSON.stringify({ gpu: "test", torch: "0.0", results: names.map((name) => ({ name, impl: "torch_impl", us: 100 })) }));
    const run = await bunRun("bench:kernels", ["--filter", filter, "--min-time-ms", "5", "--torch-json", torchJson, "--json", "--record", results]);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("argmax b=4");
    const row = jsonLine(run);
    expect(row.cases.map((c: { name: string }) => c.name)).toEqual(names);
    for (const c of row.cases) {
      expect(c.us).toBeGreaterThan(0);
      expect(c.torch[0].ours_speedup).toBeCloseTo(100 / c.us, 6);
    }
  }, 60_000);
});

describe("bun run bench:serve", () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServe(["--model", model, "--max-seq-len-override", "1024"], { MINISGL_LOG_INTERVAL_MS: "60000" });
  }, 60_000);
  afterAll(async () => {
    await server.stop();
  });

  test("against our server: the sglang.bench_serving set; --json has ttft, itl, request_throughput", async () => {
    const run = await bunRun("bench:serve", ["--base-url", server.url, "--num-prompts", "8", "--random-input-len", "8,32",
      "--random-output-len", "4,10", "--seed", "5", "--json", "--record", results]);
    expect(run.code).toBe(0);
    for (const label of ["Successful requests:", "Request throughput (req/s):", "Median TTFT (ms):", "P99 TPOT (ms):", "P95 ITL (ms):", "Max ITL (ms):"]) {
      expect(run.stderr).toContain(label);
    }
    const row = jsonLine(run);
    for (const k of ["ttft", "itl", "tpot", "e2e", "request_throughput", "output_throughput", "concurrency", "duration_s"]) expect(row).toHaveProperty(k);
    expect(row.completed).toBe(8);
    expect(row.failed).toBe(0);
    const expected = randomRequests(8, [8, 32], [4, 10], new PyRandom(5));
    expect(row.total_output_tokens).toBe(expected.reduce((a, r) => a + r.outputLen, 0));
    expect(row.total_input_tokens).toBe(expected.reduce((a, r) => a + r.promptLen, 0));
    expect(row.ttft.median_ms).toBeGreaterThan(0);
    expect(row.itl.p99_ms).toBeGreaterThan(0);
  }, 30_000);

  test("Poisson arrivals with --max-concurrency keep at most that many requests in flight", async () => {
    const run = await bunRun("bench:serve", ["--base-url", server.url, "--num-prompts", "6", "--random-input-len", "8,16",
      "--random-output-len", "4,8", "--request-rate", "50", "--max-concurrency", "2", "--json", "--record", results]);
    expect(run.code).toBe(0);
    const row = jsonLine(run);
    expect(row.completed).toBe(6);
    expect(row.request_rate).toBe(50);
    expect(row.concurrency).toBeLessThanOrEqual(2);
  }, 30_000);

  test("a ShareGPT file through /v1/chat/completions: first turns as prompts, reply lengths as output lengths", async () => {
    const conversations = Array.from({ length: 10 }, (_, i) => ({
      conversations: [{ from: "human", value: `Question number ${i}: what is ${i} plus ${i}?` }, { from: "gpt", value: `It is ${2 * i}, of course.` }],
    }));
    conversations.push({ conversations: [{ from: "human", value: "a conversation with one turn is skipped" }] });
    const dataset = join(work, "sharegpt.json");
    writeFileSync(dataset, JSON.stringify(conversations));
    const run = await bunRun("bench:serve", ["--base-url", server.url, "--endpoint", "chat", "--dataset", dataset, "--tokenizer", model,
      "--num-prompts", "4", "--json"]);
    expect(run.code).toBe(0);
    const row = jsonLine(run);
    expect(row.completed).toBe(4);
    expect(row.dataset).toBe(`sharegpt ${dataset}`);
    expect(row.total_output_tokens).toBeGreaterThanOrEqual(4 * 6); // "It is N, of course." is 7–8 tokens
    expect(row.total_input_tokens).toBeGreaterThan(4 * 12); // the chat template adds its own tokens
  }, 30_000);
});

describe("bench:serve past Bun's 256-connection client cap", () => {
  test("300 requests at rate inf are all in flight at once", async () => {
    const n = 300;
    let open = 0;
    let peak = 0;
    let allOpen!: () => void;
    const everyoneArrived = new Promise<void>((resolve) => (allOpen = resolve));
    const encoder = new TextEncoder();
    const fake = Bun.serve({
      port: 0,
      async fetch(req) {
        if (new URL(req.url).pathname !== "/v1/completions") return new Response("not found", { status: 404 });
        await req.json();
        open++;
        peak = Math.max(peak, open);
        if (open === n) allOpen();
        // Hold every request until all n are open; a client capped at 256 never gets there and times out here.
        await Promise.race([everyoneArrived, Bun.sleep(5000)]);
        open--;
        const events = [{ choices: [{ index: 0, text: "a" }] }, { choices: [{ index: 0, text: "b", finish_reason: "length" }] },
          { choices: [], usage: { prompt_tokens: 3, completion_tokens: 2 } }];
        const body = events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + "data: [DONE]\n\n";
        return new Response(encoder.encode(body), { headers: { "content-type": "text/event-stream" } });
      },
    });
    try {
      const run = await bunRun("bench:serve", ["--base-url", `http://127.0.0.1:${fake.port}`, "--model", "fake", "--num-prompts", String(n),
        "--random-input-len", "3", "--random-output-len", "2", "--warmup-requests", "0", "--json"]);
      expect(run.code).toBe(0);
      expect(jsonLine(run).completed).toBe(n);
      expect(peak).toBe(n);
    } finally {
      fake.stop(true);
    }
  }, 30_000);
});

describe("bun run bench:charts", () => {
  test("draws SVG charts and fills RESULTS.md's tables from the rows recorded above", async () => {
    const md = join(work, "RESULTS.md");
    writeFileSync(md, readFileSync(join(ROOT, "bench", "RESULTS.md"), "utf8"));
    const charts = join(work, "charts");
    const run = await bunRun("bench:charts", ["--results", results, "--out-dir", charts, "--results-md", md]);
    expect(run.code).toBe(0);
    for (const name of ["offline", "serving"]) {
      expect(existsSync(join(charts, `${name}.svg`))).toBe(true);
      expect(readFileSync(join(charts, `${name}.svg`), "utf8")).toStartWith("<svg");
    }
    const text = readFileSync(md, "utf8");
    expect(text).toContain("| tiny-qwen3 | minisgl | off |");
    expect(text).toContain("decode batch 4, context 64");
    expect(text).toContain("argmax b=4");
    expect(text).not.toContain("_no rows yet_");
  }, 30_000);
});

describe("bench/hf_baseline.py", () => {
  test.skipIf(Bun.which("python3") === null)("draws the same workload as bench/offline_workload.ts", async () => {
    const proc = Bun.spawn(["python3", join(ROOT, "bench", "hf_baseline.py"), "--dry-run", "--num-seqs", "16", "--seed", "7"], {
      stdout: "pipe", env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1" },
    });
    const out = JSON.parse(await new Response(proc.stdout).text());
    expect(await proc.exited).toBe(0);
    const w = offlineWorkload(16, [100, 1024], [100, 1024], 7);
    expect(out.input_tokens).toBe(w.prompts.reduce((a, p) => a + p.length, 0));
    expect(out.output_tokens).toBe(w.outputLens.reduce((a, b) => a + b, 0));
    expect(out.first_prompt_ids).toEqual(w.prompts[0].slice(0, 5));
  }, 10_000);
});
