// `bun run bench`: offline throughput through the LLM API on nano-vllm's / Mini-SGLang's workload
// (bench/offline_workload.ts): output tokens / wall time of generating every request, plus total tokens / s.
// Start-up and one short warm-up request are not timed.
import { LLM, type LLMOptions } from "../src/index.ts";
import { loadModelConfig } from "../src/model/config.ts";
import * as flag from "./flags.ts";
import { defaultDevice, gpuName, hardwareLabel } from "./hardware.ts";
import { benchModelDir } from "./model_dir.ts";
import { modelCost } from "./model_cost.ts";
import { offlineWorkload } from "./offline_workload.ts";
import { RequestProgress } from "./progress.ts";
import { appendRecord, overlapEnabled, recordHead } from "./record.ts";
import { gpuSpec, offlineRooflineSeconds } from "./roofline.ts";

const FLAGS: flag.FlagDef[] = [
  flag.MODEL_FLAG,
  flag.DEVICE_FLAG,
  flag.DUMMY_WEIGHT_FLAG,
  { name: "num-seqs", value: "n", help: "Requests", default: "256" },
  { name: "input-len", value: "min,max", help: "Prompt length range in tokens (uniform, both ends included)", default: "100,1024" },
  { name: "output-len", value: "min,max", help: "Output length range in tokens (max_tokens, ignore_eos)", default: "100,1024" },
  { name: "seed", value: "n", help: "Seed of the workload (CPython random.seed)", default: "0" },
  { name: "temperature", value: "t", help: "Sampling temperature (top-k, top-p, min-p off)", default: "0.6" },
  { name: "tp", value: "n", help: "Tensor-parallel ranks", default: "1" },
  { name: "page-size", value: "n", help: "KV allocation granularity in tokens", default: "1" },
  { name: "cache", value: "radix|naive", help: "Prefix cache", default: "radix" },
  { name: "max-running-requests", value: "n", help: "Requests decoded together", default: "256" },
  { name: "max-prefill-length", value: "n", help: "Prompt tokens per prefill step", default: "8192" },
  { name: "max-seq-len", value: "n", help: "Context length cap (nano-vllm and Mini-SGLang use 4096)", default: "4096" },
  { name: "num-pages", value: "n", help: "KV pool size in pages (default: the engine's)" },
  { name: "memory-ratio", value: "x", help: "cuda: share of GPU memory for weights, activations and KV (default: the engine's)" },
  { name: "cuda-graph-max-bs", value: "n", help: "cuda: largest decode batch replayed from a CUDA graph; 0 disables (default: the engine's)" },
  { name: "skip-warmup", help: "Do not run the untimed warm-up request" },
  ...flag.outputFlags("summary"),
];

async function main(): Promise<void> {
  const f = flag.parseFlags(process.argv.slice(2), "bun run bench", "offline throughput through the LLM API", FLAGS);
  const device = flag.str(f, "device") === undefined ? defaultDevice() : flag.choice(f, "device", ["cpu", "cuda"] as const);
  const dummyWeight = flag.bool(f, "dummy-weight");
  const numSeqs = flag.int(f, "num-seqs", 1);
  const inputLen = flag.range(f, "input-len", 1);
  const outputLen = flag.range(f, "output-len", 1);
  const seed = flag.int(f, "seed", 0);
  const temperature = flag.num(f, "temperature", 0);
  const options: LLMOptions = {
    model: await benchModelDir(flag.requiredStr(f, "model"), dummyWeight),
    device,
    dummyWeight,
    tp: flag.int(f, "tp", 1),
    pageSize: flag.int(f, "page-size", 1),
    cache: flag.choice(f, "cache", ["radix", "naive"] as const),
    maxRunningRequests: flag.int(f, "max-running-requests", 1),
    maxPrefillLength: flag.int(f, "max-prefill-length", 1),
    maxSeqLen: flag.int(f, "max-seq-len", 2),
    numPages: flag.optionalInt(f, "num-pages", 1),
    memoryRatio: flag.str(f, "memory-ratio") === undefined ? undefined : flag.num(f, "memory-ratio", 0.01),
    cudaGraphMaxBs: flag.optionalInt(f, "cuda-graph-max-bs", 0),
  };
  if (inputLen[1] + outputLen[1] > options.maxSeqLen!) {
    throw new flag.BenchFlagError(`--input-len max + --output-len max (${inputLen[1] + outputLen[1]}) exceed --max-seq-len ${options.maxSeqLen}`);
  }
  const json = flag.bool(f, "json");
  const say = (line: string) => (json ? console.error(line) : console.log(line));
  const hardware = hardwareLabel(device);
  const overlap = overlapEnabled();
  const workload = offlineWorkload(numSeqs, inputLen, outputLen, seed);
  const inputTokens = workload.prompts.reduce((a, p) => a + p.length, 0);

  const t0 = performance.now();
  const llm = await LLM.create(options);
  const startupSeconds = (performance.now() - t0) / 1000;
  const common = { temperature, topK: 0, topP: 1, minP: 0, ignoreEos: true, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
  try {
    if (!flag.bool(f, "skip-warmup")) await llm.generate([[0, 1, 2, 3, 4, 5, 6, 7]], { ...common, maxTokens: 4, seed });
    const progress = new RequestProgress(numSeqs, "bench");
    const started = performance.now();
    const results = await Promise.all(workload.prompts.map(async (prompt, i) => {
      const [r] = await llm.generate([prompt], { ...common, maxTokens: workload.outputLens[i], seed: (seed * 0x9e3779b1 + i) >>> 0 });
      progress.finished(r.tokenIds.length);
      return r;
    }));
    const seconds = (performance.now() - started) / 1000;
    const failed = results.map((r, i) => ({ r, i })).filter(({ r, i }) => r.error || r.tokenIds.length !== workload.outputLens[i]);
    if (failed.length) {
      const { r, i } = failed[0];
      throw new Error(`${failed.length} of ${numSeqs} requests did not generate their max_tokens; request ${i}: ` +
        `${r.error ?? `${r.tokenIds.length} of ${workload.outputLens[i]} tokens, finish ${r.finishReason}`}`);
    }
    const outputTokens = results.reduce((a, r) => a + r.tokenIds.length, 0);

    const config = loadModelConfig(options.model);
    const gpu = device === "cuda" ? gpuSpec(gpuName()) : null;
    // With --tp N, N GPUs that split every step evenly (the floor ignores the collectives).
    const rooflineSeconds = gpu ? offlineRooflineSeconds(modelCost(config), gpu,
      workload.prompts.map((p, i) => ({ inputLen: p.length, outputLen: workload.outputLens[i] })),
      { maxRunningRequests: options.maxRunningRequests!, maxPrefillTokens: options.maxPrefillLength! }) / (options.tp ?? 1) : null;
    const row = {
      ...recordHead("offline", device, hardware, "bench"),
      gpu: hardware,
      model: flag.requiredStr(f, "model"),
      architecture: config.architecture,
      dummy_weight: dummyWeight,
      overlap,
      num_requests: numSeqs,
      input_tokens: inputTokens,
      output_tokens: outputTokens,
      duration_s: seconds,
      output_throughput: outputTokens / seconds,
      total_throughput: (inputTokens + outputTokens) / seconds,
      request_throughput: numSeqs / seconds,
      roofline_output_throughput: rooflineSeconds === null ? null : outputTokens / rooflineSeconds,
      startup_s: startupSeconds,
      config: {
        num_seqs: numSeqs, input_len: inputLen, output_len: outputLen, seed, temperature, tp: options.tp, page_size: options.pageSize,
        cache: options.cache, max_running_requests: options.maxRunningRequests, max_prefill_length: options.maxPrefillLength,
        max_seq_len: options.maxSeqLen, num_pages: options.numPages ?? null, memory_ratio: options.memoryRatio ?? null,
        cuda_graph_max_bs: options.cudaGraphMaxBs ?? null,
      },
    };

    say(`minisgl offline throughput: ${numSeqs} requests, seed ${seed}, input ${inputLen.join("–")} / output ${outputLen.join("–")} ` +
      `tokens, temperature ${temperature}, ignore_eos`);
    say(`model ${config.architecture} from ${options.model}${dummyWeight ? " (dummy weights)" : ""}; device ${device} on ${hardware}; ` +
      `overlap scheduling ${overlap ? "on" : "off"}; tp ${options.tp}, page size ${options.pageSize}, cache ${options.cache}`);
    say(`start-up ${startupSeconds.toFixed(2)} s (not timed); ${inputTokens} input + ${outputTokens} output tokens in ${seconds.toFixed(2)} s`);
    say(`output throughput: ${row.output_throughput.toFixed(1)} tok/s   total throughput: ${row.total_throughput.toFixed(1)} tok/s   ` +
      `requests: ${row.request_throughput.toFixed(2)} /s`);
    say(row.roofline_output_throughput === null
      ? `roofline: n/a (${device === "cpu" ? "cpu" : `no spec for ${hardware} in bench/roofline.ts`})`
      : `roofline on ${hardware}: ${row.roofline_output_throughput.toFixed(0)} output tok/s; measured = ` +
        `${((100 * row.output_throughput) / row.roofline_output_throughput).toFixed(1)}% of it`);
    if (json) console.log(JSON.stringify(row));
    const record = flag.str(f, "record");
    if (record) appendRecord(record, row);
  } finally {
    await llm.close();
  }
}

flag.runMain(main);
