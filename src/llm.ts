// The offline API: LLM.create(...) starts a rank worker; generate() runs a batch of prompts to the end.
import { existsSync } from "node:fs";
import { EngineClient } from "./engine/client.ts";
import { type FinishReasonOut as StreamFinish, QueueFull, RequestRejected, RequestStream } from "./engine/request_stream.ts";
import type { TokenLogprob } from "./engine/sample_output.ts";
import { resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from "./engine/sampling_params.ts";
import { checkBunVersion } from "./runtime.ts";
import { TextTokenizer } from "./tokenizer/tokenizer.ts";

export interface LLMOptions {
  model: string; // local model directory
  device?: "cpu" | "cuda";
  tp?: number; // tensor-parallel ranks, one Worker each (default 1)
  pageSize?: number;
  cache?: "radix" | "naive";
  maxPrefillLength?: number;
  maxRunningRequests?: number;
  maxSeqLen?: number;
  numPages?: number;
  memoryRatio?: number; // cuda: share of GPU memory for weights + activations + KV (default 0.9)
  cudaGraphMaxBs?: number; // cuda: largest decode batch replayed from a CUDA graph; 0 disables
  dummyWeight?: boolean;
  log?: boolean; // engine log lines (default false for the offline API)
}

export type FinishReasonOut = StreamFinish | "error";

export interface Sample {
  text: string;
  tokenIds: number[];
  finishReason: FinishReasonOut;
  logprobs?: TokenLogprob[];
  error?: string;
}

export interface GenerateResult extends Sample {
  promptTokens: number;
  cachedTokens: number;
  /** All n samples (the first is also spread into this object). */
  samples: Sample[];
}

export class LLM {
  private nextUid = 1;

  private constructor(
    private readonly client: EngineClient,
    readonly tokenizer: TextTokenizer,
  ) {}

  static async create(o: LLMOptions): Promise<LLM> {
    checkBunVersion();
    if (!existsSync(o.model)) throw new Error(`model directory ${o.model} does not exist`);
    const tokenizer = await TextTokenizer.load(o.model);
    const client = await EngineClient.start(o.device ?? "cpu", {
      modelDir: o.model, dummyWeight: o.dummyWeight, pageSize: o.pageSize, cache: o.cache,
      maxPrefillLength: o.maxPrefillLength, maxRunningRequests: o.maxRunningRequests, maxSeqLen: o.maxSeqLen,
      numPages: o.numPages, memoryRatio: o.memoryRatio, cudaGraphMaxBs: o.cudaGraphMaxBs,
      eosTokenIds: tokenizer.eosTokenIds, quiet: !o.log,
    }, { tp: o.tp ?? 1 });
    return new LLM(client, tokenizer);
  }

  get info() {
    return this.client.info;
  }

  /** Runs every prompt to completion. String prompts are tokenized as plain text (no chat template). */
  async generate(prompts: string[] | number[][], params?: SamplingParamsInput | SamplingParamsInput[]): Promise<GenerateResult[]> {
    if (!Array.isArray(prompts)) throw new Error("prompts must be an array");
    if (Array.isArray(params) && params.length !== prompts.length) {
      throw new Error(`got ${params.length} sampling params for ${prompts.length} prompts`);
    }
    const resolved = prompts.map((_, i) => {
      try {
        return resolveSamplingParams(Array.isArray(params) ? params[i] : params, this.client.info.defaults as SamplingParams,
          this.client.info.vocabSize);
      } catch (e) {
        throw new Error(`prompt ${i}: ${(e as Error).message}`);
      }
    });
    const ids = await Promise.all(prompts.map((p) => (typeof p === "string" ? this.tokenizer.encode(p) : p)));
    return Promise.all(ids.map((promptIds, i) => this.runOne(promptIds, resolved[i])));
  }

  private async runOne(prompt: number[], params: SamplingParams): Promise<GenerateResult> {
    const uid = this.nextUid;
    this.nextUid += params.n;
    const failed = (error: string): GenerateResult => {
      const sample: Sample = { text: "", tokenIds: [], finishReason: "error", error };
      return { ...sample, promptTokens: prompt.length, cachedTokens: 0, samples: [sample] };
    };
    let stream: RequestStream;
    try {
      stream = new RequestStream(this.client, this.tokenizer, uid, prompt, params);
      for await (const _ of stream.updates());
    } catch (e) {
      if (e instanceof RequestRejected || e instanceof QueueFull) return failed(e.message);
      throw e;
    }
    const samples: Sample[] = stream.outputs.map((o, i) => ({
      text: o.fullText, tokenIds: o.tokenIds, finishReason: stream.finishes[i] ?? "error",
      ...(params.logprobs ? { logprobs: o.logprobs } : {}),
    }));
    return { ...samples[0], promptTokens: prompt.length, cachedTokens: stream.cachedTokens, samples };
  }

  async flushCache(): Promise<boolean> {
    return this.client.flush();
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
