// Command line: `bun run serve` (the OpenAI-compatible server), `bun run shell` (chat in the terminal) and
// `bun run generate` (greedy text on the CPU backend, without the engine; with --tp > 1 through the rank
// workers). Without --model, serve and shell load the embedded default model (models/default).
import { cac, type CAC } from "cac";
import { CpuBackend } from "./backend/cpu.ts";
import { defaultModelDir } from "./default_model.ts";
import { DEVICE_CHOICES, selectDevice } from "./device_select.ts";
import { EngineClient } from "./engine/client.ts";
import { RequestStream } from "./engine/request_stream.ts";
import { resolveSamplingParams, type SamplingParams } from "./engine/sampling_params.ts";
import { loadModel } from "./model/load.ts";
import { argmax, SingleSequence } from "./model/sequence.ts";
import { checkBunVersion } from "./runtime.ts";
import { FlagError, rawFlag, SERVE_FLAGS, serveOptions } from "./server/flags.ts";
import { exitOnSignals, rankEngineOptions, startServer } from "./server/serve.ts";
import { runFollowerNode } from "./engine/follower_node.ts";
import { runShell } from "./shell.ts";
import { progressPrinter } from "./hub/progress_bar.ts";
import { resolveModel } from "./hub/resolve_model.ts";
import { IncrementalDetokenizer } from "./tokenizer/detokenizer.ts";
import { TextTokenizer } from "./tokenizer/tokenizer.ts";

interface GenerateOptions {
  model: string;
  prompt: string;
  maxTokens: number;
  dummyWeight?: boolean;
  tp: number;
}

/** Greedy generation by the tensor-parallel rank workers (the engine), streamed as it decodes. */
async function generateParallel(o: GenerateOptions): Promise<void> {
  const tokenizer = await TextTokenizer.load(o.model);
  const promptIds = await tokenizer.encode(String(o.prompt));
  if (promptIds.length === 0) throw new Error("--prompt is empty");
  const started = performance.now();
  const client = await EngineClient.start("cpu", {
    modelDir: o.model, dummyWeight: o.dummyWeight, eosTokenIds: tokenizer.eosTokenIds, quiet: true, maxRunningRequests: 1,
    maxSeqLen: promptIds.length + o.maxTokens,
  }, { tp: o.tp });
  console.error(`loaded ${client.info.architecture} from ${o.model} on ${o.tp} ranks in ` +
    `${((performance.now() - started) / 1000).toFixed(2)} s (cpu)`);
  try {
    // Plain greedy as the single-rank path: no penalties from the model's generation_config.json.
    const params = resolveSamplingParams({ maxTokens: o.maxTokens, temperature: 0, repetitionPenalty: 1, presencePenalty: 0,
      frequencyPenalty: 0 }, client.info.defaults as SamplingParams, client.info.vocabSize);
    const t0 = performance.now();
    const stream = new RequestStream(client, tokenizer, 1, promptIds, params);
    for await (const step of stream.updates()) for (const u of step) process.stdout.write(u.text);
    process.stdout.write("\n");
    const generated = stream.completionTokens;
    const seconds = (performance.now() - t0) / 1000;
    console.error(`${generated} tokens in ${seconds.toFixed(2)} s (${(generated / seconds).toFixed(1)} tok/s)`);
  } finally {
    await client.close();
  }
}

async function generate(o: GenerateOptions): Promise<void> {
  if (!Number.isInteger(o.maxTokens) || o.maxTokens < 1) throw new Error(`--max-tokens must be an integer ≥ 1`);
  if (!Number.isInteger(o.tp) || o.tp < 1) throw new FlagError(`--tp must be an integer ≥ 1 (got ${o.tp})`);
  if (o.tp > 1) return generateParallel(o);
  const backend = new CpuBackend();
  const tokenizer = await TextTokenizer.load(o.model);
  const promptIds = await tokenizer.encode(String(o.prompt));
  if (promptIds.length === 0) throw new Error("--prompt is empty");
  const maxLength = promptIds.length + o.maxTokens;
  const { model, config, loadSeconds, maxSeqLen } = loadModel(backend, {
    modelDir: o.model, dummyWeight: o.dummyWeight, maxTokens: promptIds.length, maxSeqLen: maxLength,
  });
  if (maxLength > maxSeqLen) throw new Error(`prompt (${promptIds.length}) + max tokens (${o.maxTokens}) exceed the context (${maxSeqLen})`);
  console.error(`loaded ${config.architecture} from ${o.model} in ${loadSeconds.toFixed(2)} s (cpu)`);
  const seq = new SingleSequence(backend, model, maxLength);
  const detok = new IncrementalDetokenizer(tokenizer);
  const started = performance.now();
  let token = argmax(seq.feed(promptIds)[0]);
  let generated = 0;
  while (true) {
    generated++;
    if (tokenizer.eosTokenIds.includes(token)) break;
    process.stdout.write(await detok.push([token]));
    if (generated >= o.maxTokens) break;
    token = argmax(seq.feed([token])[0]);
  }
  process.stdout.write(`${await detok.flush()}\n`);
  const seconds = (performance.now() - started) / 1000;
  console.error(`${generated} tokens in ${seconds.toFixed(2)} s (${(generated / seconds).toFixed(1)} tok/s)`);
  seq.free();
  model.free();
}

/** Every command and flag (the README's flags table is generated from this: scripts/readme_flags.ts). */
export function buildCli(): CAC {
  const cli = cac("minisgl");
  cli
    .command("generate", "Greedy continuation of a prompt (CPU backend)")
    .option("--model <dir>", "Local model directory (config.json, *.safetensors, tokenizer.json)")
    .option("--prompt <text>", "Prompt text (no chat template)", { default: "Once upon a time" })
    .option("--max-tokens <n>", "Tokens to generate", { default: 32 })
    .option("--dummy-weight", "Random weights from config.json alone")
    .option("--tp <n>", "Tensor-parallel ranks (one Worker each)", { default: 1 })
    .action(async (o: GenerateOptions) => {
      if (!o.model) throw new Error("--model is required");
      await generate(o);
    });
  const serve = cli.command("serve", "OpenAI-compatible server (Elysia, SSE)");
  for (const f of SERVE_FLAGS) {
    serve.option(`--${f.name}${f.value ? ` <${f.value}>` : ""}`, f.help, f.default === undefined ? undefined : { default: f.default });
  }
  serve.option("--model-path <dir>", "Alias of --model").action(async (flags: Record<string, unknown>) => {
    const model = rawFlag(process.argv, ["model", "model-path"]);
    const modelDir = model ? await resolveModel(model, { onProgress: progressPrinter() }) : defaultModelDir();
    const options = serveOptions(flags, process.argv, modelDir);
    if (options.nodes && options.nodes.nodeRank > 0) {
      const failure = await runFollowerNode(rankEngineOptions(options), options.tp ?? 1, options.nodes, (line) => console.log(line));
      if (failure) console.error(`error: ${failure}`);
      process.exit(failure ? 1 : 0);
    }
    const server = await startServer(options);
    exitOnSignals(server);
  });
  cli
    .command("shell", "Interactive chat in the terminal (/reset, /exit)")
    .option("--model <id>", "Local model directory or Hugging Face id (default: the embedded models/default)")
    .option("--device <auto|cpu|cuda>", "Backend; auto: cuda when a GPU is present and build/libmsgl_cuda.so loads", { default: "auto" })
    .option("--tp <n>", "Tensor-parallel ranks (one Worker each)", { default: 1 })
    .action(async (o: { device: string; tp: number }) => {
      const model = rawFlag(process.argv, ["model", "model-path"]);
      const flag = DEVICE_CHOICES.find((d) => d === o.device);
      if (flag === undefined) throw new FlagError(`--device must be one of ${DEVICE_CHOICES.join(", ")} (got ${o.device})`);
      if (!Number.isInteger(o.tp) || o.tp < 1) throw new FlagError(`--tp must be an integer ≥ 1 (got ${o.tp})`);
      const { device, note } = selectDevice(flag);
      if (note !== null) console.error(note);
      await runShell(model ? await resolveModel(model, { onProgress: progressPrinter() }) : defaultModelDir(), device, o.tp);
    });
  cli.help();
  return cli;
}

function main(): void {
  checkBunVersion();
  const cli = buildCli();
  cli.parse(process.argv, { run: false });
  if (!cli.matchedCommand && !cli.options.help) {
    cli.outputHelp();
    process.exit(1);
  }
  Promise.resolve(cli.runMatchedCommand()).catch((e: unknown) => {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}

if (import.meta.main) main();
