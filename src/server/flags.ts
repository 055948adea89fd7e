// `bun run serve` flags: definitions (shown by --help with their defaults) and validation that names the flag.
import { ATTENTION_FLAG_HELP, type AttentionKernels, parseAttentionKernels } from "../backend/attention_kernels.ts";
import { DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME } from "../default_model.ts";
import { DEVICE_CHOICES, selectDevice } from "../device_select.ts";
import { type NodeLayout, nodeRanks, parseInitAddr } from "../engine/node_link.ts";
import type { ServeOptions } from "./serve.ts";

export interface FlagSpec {
  name: string; // without the leading --
  help: string;
  default?: string | number | boolean;
  value?: string; // placeholder for flags that take a value
}

export const SERVE_FLAGS: FlagSpec[] = [
  { name: "model", value: "id", help: "Local model directory or Hugging Face id (alias --model-path); default: the embedded models/default" },
  { name: "tp", value: "n", help: "Tensor-parallel ranks (one Worker each; GPUs on cuda), on all nodes together", default: 1 },
  { name: "nnodes", value: "n", help: "Machines the --tp ranks are spread over (cuda; --tp/--nnodes GPUs each)", default: 1 },
  { name: "node-rank", value: "k", help: "This machine's index; node 0 serves HTTP, the others only run ranks", default: 0 },
  { name: "dist-init-addr", value: "host:port", help: "Node 0's address for the node link (needed with --nnodes > 1)" },
  { name: "dtype", value: "type", help: "Weight and activation dtype: auto | bfloat16", default: "auto" },
  { name: "host", value: "addr", help: "Listen address", default: "127.0.0.1" },
  { name: "port", value: "n", help: "Listen port", default: 1919 },
  { name: "max-running-requests", value: "n", help: "Requests decoded together", default: 256 },
  { name: "max-queued-requests", value: "n", help: "Requests in flight before 503 + Retry-After", default: 4096 },
  { name: "max-seq-len-override", value: "n", help: "Cap the context length (default: the model's)" },
  { name: "memory-ratio", value: "x", help: "Fraction of GPU memory for weights + KV (cuda)", default: 0.9 },
  { name: "dummy-weight", help: "Random weights from config.json alone (benchmarks)", default: false },
  { name: "cuda-graph-max-bs", value: "n", help: "Largest decode batch captured in a CUDA graph; 0 disables (cuda)" },
  { name: "max-prefill-length", value: "n", help: "Prompt tokens per prefill step (longer prompts are chunked)", default: 8192 },
  { name: "num-pages", value: "n", help: "KV pool size in pages (default: from memory)" },
  { name: "page-size", value: "n", help: "KV allocation granularity in tokens", default: 1 },
  { name: "attn", value: "prefill,decode", help: ATTENTION_FLAG_HELP, default: "auto" },
  { name: "cache", value: "radix|naive", help: "Prefix cache", default: "radix" },
  { name: "device", value: "auto|cpu|cuda", help: "Backend; auto: cuda when a GPU is present and build/libmsgl_cuda.so loads, else cpu", default: "auto" },
  { name: "api-key", value: "key", help: "Require 'Authorization: Bearer <key>' (all routes but /health)" },
  { name: "served-model-name", value: "name", help: "Model name in the API (default: --model, or \"default\" for the embedded model)" },
  { name: "log-level", value: "level", help: "debug | info | warning | error", default: "info" },
];

/** The raw string after --name (or --name=value) in argv; cac would turn "00123" into 123. */
export function rawFlag(argv: string[], names: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    for (const n of names) {
      if (argv[i] === `--${n}`) return argv[i + 1];
      if (argv[i].startsWith(`--${n}=`)) return argv[i].slice(n.length + 3);
    }
  }
  return undefined;
}

export class FlagError extends Error {}

function intFlag(v: unknown, name: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new FlagError(`--${name} must be an integer ≥ ${min} (got ${JSON.stringify(v)})`);
  return n;
}

function choice<T extends string>(v: unknown, name: string, options: readonly T[]): T {
  if (!options.includes(String(v) as T)) throw new FlagError(`--${name} must be one of ${options.join(", ")} (got ${JSON.stringify(v)})`);
  return String(v) as T;
}

/** Validated serve options from cac's parsed flags plus the raw argv (for string flags). */
export function serveOptions(flags: Record<string, unknown>, argv: string[], modelDir: string): ServeOptions {
  const tp = intFlag(flags.tp ?? 1, "tp", 1);
  const nnodes = intFlag(flags.nnodes ?? 1, "nnodes", 1);
  const nodeRank = intFlag(flags.nodeRank ?? 0, "node-rank", 0);
  const initAddr = rawFlag(argv, ["dist-init-addr"]);
  let nodes: NodeLayout | undefined;
  if (nnodes > 1 || nodeRank > 0) {
    if (!initAddr) throw new FlagError("--nnodes > 1 needs --dist-init-addr host:port (node 0's address)");
    try {
      nodeRanks(tp, nnodes, nodeRank);
      parseInitAddr(initAddr);
    } catch (e) {
      throw new FlagError((e as Error).message);
    }
    nodes = { nnodes, nodeRank, initAddr };
  }
  choice(flags.dtype ?? "auto", "dtype", ["auto", "bfloat16", "bf16"] as const);
  const ratio = Number(flags.memoryRatio ?? 0.9);
  if (!(ratio > 0 && ratio <= 1)) throw new FlagError(`--memory-ratio must be in (0, 1] (got ${flags.memoryRatio})`);
  const { device, note } = selectDevice(choice(flags.device ?? "auto", "device", DEVICE_CHOICES));
  if (note !== null) console.log(note);
  if (nodes && device !== "cuda") throw new FlagError("--nnodes > 1 needs --device cuda (the ranks' collectives go over NCCL)");
  const attention = attentionFlag(String(flags.attn ?? "auto"), device);
  const model = rawFlag(argv, ["model", "model-path"]) ?? (modelDir === DEFAULT_MODEL_DIR ? DEFAULT_MODEL_NAME : modelDir);
  const seqLen = flags.maxSeqLenOverride;
  const pages = flags.numPages;
  return {
    modelDir,
    tp,
    nodes,
    servedModelName: rawFlag(argv, ["served-model-name"]) ?? model,
    host: String(rawFlag(argv, ["host"]) ?? "127.0.0.1"),
    port: intFlag(flags.port ?? 1919, "port", 0),
    device,
    apiKey: rawFlag(argv, ["api-key"]) ?? null,
    maxRunningRequests: intFlag(flags.maxRunningRequests ?? 256, "max-running-requests", 1),
    maxQueuedRequests: intFlag(flags.maxQueuedRequests ?? 4096, "max-queued-requests", 1),
    maxPrefillLength: intFlag(flags.maxPrefillLength ?? 8192, "max-prefill-length", 1),
    maxSeqLen: seqLen === undefined ? undefined : intFlag(seqLen, "max-seq-len-override", 1),
    numPages: pages === undefined ? undefined : intFlag(pages, "num-pages", 1),
    memoryRatio: ratio,
    cudaGraphMaxBs: flags.cudaGraphMaxBs === undefined ? undefined : intFlag(flags.cudaGraphMaxBs, "cuda-graph-max-bs", 0),
    attention,
    pageSize: intFlag(flags.pageSize ?? 1, "page-size", 1),
    cache: choice(flags.cache ?? "radix", "cache", ["radix", "naive"] as const),
    dummyWeight: flags.dummyWeight === true,
    logLevel: choice(flags.logLevel ?? "info", "log-level", ["debug", "info", "warning", "error"] as const),
  };
}

function attentionFlag(text: string, device: "cpu" | "cuda"): AttentionKernels {
  let k: AttentionKernels;
  try {
    k = parseAttentionKernels(text);
  } catch (e) {
    throw new FlagError((e as Error).message);
  }
  if (device === "cpu" && text !== "auto") throw new FlagError(`--attn ${text}: the CPU backend has one attention kernel of each kind (only auto)`);
  return k;
}
