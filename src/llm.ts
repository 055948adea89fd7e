// The offline API: LLM.create(...) starts a rank worker; generate() runs a batch of prompts to the end.
import { existsSync } from "node:fs";
import { EngineClient } from "./engine/client.ts";
import { SampleOutput, type TokenLogprob } from "./engine/sample_output.ts";
import { resolveSamplingParams, type SamplingParams, type SamplingParamsInput } from "./engine/sampling_params.ts";
import { Finish, type TokenResult } from "./ipc/messages.ts";
import { checkBunVersion } from "./runtime.ts";
import { TextTokenizer } from "./tokenizer/tokenizer.ts";

export interface LLMOptions {
  model: string; // local model directory
  device?: "cpu" | "cuda";
  tp?: number;
  pageSize?: number;
  cache?: "radix" | "naive";
  maxPrefillLength?: number;
  maxRunningRequests?: number;
  maxSeqLen?: number;
  numPages?: number;
  dummyWeight?: boolean;
  log?: boolean; // engine log lines (default false for the offline API)
}

export type FinishReasonOut = "stop" | "length" | "abort" | "error";

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

const FINISH_NAMES: Record<number, FinishReasonOut> = { [Finish.stop]: "stop", [Finish.length]: "length", [Finish.abort]: "abort", [Finish.error]: "error" };

export class LLM {
  private nextUid = 1;

  private constructor(
    private readonly client: EngineClient,
    readonly tokenizer: TextTokenizer,
  ) {}

  static async create(o: LLMOptions): Promise<LLM> {
    checkBunVersion();
    if (!existsSync(o.model)) throw new Error(`model directory ${o.model} does not exist`);
    if ((o.tp ?? 1) !== 1) throw new Error("tp > 1 is not available yet (tensor parallelism is a later issue)");
    const tokenizer = await TextTokenizer.load(o.model);
    const client = await EngineClient.start(o.device ?? "cpu", {
      modelDir: o.model, dummyWeight: o.dummyWeight, pageSize: o.pageSize, cache: o.cache,
      maxPrefillLength: o.maxPrefillLength, maxRunningRequests: o.maxRunningRequests, maxSeqLen: o.maxSeqLen,
      numPages: o.numPages, eosTokenIds: tokenizer.eosTokenIds, quiet: !o.log,
    });
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

  private runOne(prompt: number[], params: SamplingParams): Promise<GenerateResult> {
    const uid = this.nextUid;
    this.nextUid += params.n;
    const outputs = Array.from({ length: params.n }, () => new SampleOutput(this.tokenizer, params));
    const finishes: (FinishReasonOut | null)[] = outputs.map(() => null);
    let cachedTokens = 0;
    let chain = Promise.resolve(); // detokenization of one request stays in order
    return new Promise((resolve) => {
      const done = () => {
        const samples: Sample[] = outputs.map((o, i) => ({
          text: o.fullText, tokenIds: o.tokenIds, finishReason: finishes[i] ?? "error",
          ...(params.logprobs ? { logprobs: o.logprobs } : {}),
        }));
        resolve({ ...samples[0], promptTokens: prompt.length, cachedTokens, samples });
      };
      const onResult = (r: TokenResult) => {
        const i = r.uid - uid;
        chain = chain.then(async () => {
          if (finishes[i]) return;
          if (r.token >= 0) {
            if (outputs[i].tokenIds.length === 0) cachedTokens = Math.max(cachedTokens, r.cachedTokens);
            await outputs[i].add(r.token, { logprob: r.logprob, topIds: r.topIds, topLogprobs: r.topLogprobs });
          }
          if (outputs[i].stoppedByString) {
            finishes[i] = "stop";
            if (r.finish === Finish.none) this.client.abort(r.uid);
          } else if (r.finish !== Finish.none) {
            finishes[i] = FINISH_NAMES[r.finish];
          }
          if (finishes[i]) await outputs[i].finish();
          if (finishes.every((f) => f !== null)) done();
        });
      };
      const onError = (message: string) => {
        chain = chain.then(() => {
          resolve({ text: "", tokenIds: [], finishReason: "error", error: message, promptTokens: prompt.length, cachedTokens: 0,
            samples: [{ text: "", tokenIds: [], finishReason: "error", error: message }] });
        });
      };
      if (!this.client.submit(uid, prompt, params, { onResult, onError })) onError("the request queue is full");
    });
  }

  async flushCache(): Promise<boolean> {
    return this.client.flush();
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
