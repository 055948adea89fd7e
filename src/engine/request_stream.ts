// One request (n samples) as an async stream of per-step updates on the main thread: results from the
// rank worker are detokenized, stop strings end samples (and abort them in the engine), and an abort
// signal (a client that went away) aborts every sample within one step. Every await settles on abort.
import type { TokenResult } from "../ipc/messages.ts";
import { Finish } from "../ipc/messages.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { type EngineClient, EngineFailed } from "./client.ts";
import { SampleOutput, type TokenLogprob } from "./sample_output.ts";
import type { SamplingParams } from "./sampling_params.ts";

export type FinishReasonOut = "stop" | "length" | "abort";

export interface SampleUpdate {
  index: number; // which of the n samples
  text: string; // newly final text
  tokenIds: number[]; // tokens of this step
  logprobs: TokenLogprob[];
  finishReason: FinishReasonOut | null;
}

export class RequestRejected extends Error {}
export class QueueFull extends Error {}

const NAMES: Record<number, FinishReasonOut> = { [Finish.stop]: "stop", [Finish.length]: "length", [Finish.abort]: "abort" };

export class RequestStream {
  readonly outputs: SampleOutput[];
  readonly finishes: (FinishReasonOut | null)[];
  cachedTokens = 0;
  private readonly pending: TokenResult[] = [];
  private rejected: string | null = null;
  private failed: string | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly client: EngineClient,
    tokenizer: TextTokenizer,
    readonly uid: number,
    readonly prompt: number[],
    readonly params: SamplingParams,
  ) {
    this.outputs = Array.from({ length: params.n }, () => new SampleOutput(tokenizer, params));
    this.finishes = this.outputs.map(() => null);
    const accepted = client.submit(uid, prompt, params, {
      onResult: (r) => {
        this.pending.push(r);
        this.wake?.();
      },
      onError: (message) => {
        this.rejected = message;
        this.wake?.();
      },
      onFailure: (message) => {
        this.failed = message;
        this.wake?.();
      },
    });
    if (!accepted) throw new QueueFull("the request queue is full, retry later");
  }

  get done(): boolean {
    return this.finishes.every((f) => f !== null);
  }

  get completionTokens(): number {
    return this.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
  }

  /** Aborts every unfinished sample in the engine (the stream then ends with "abort"). */
  abort(): void {
    this.finishes.forEach((f, i) => {
      if (f === null) this.client.abort(this.uid + i);
    });
  }

  /** Per-step updates until every sample has finished. */
  async *updates(signal?: AbortSignal): AsyncGenerator<SampleUpdate[]> {
    const onAbort = () => {
      this.abort();
      this.wake?.();
    };
    signal?.addEventListener("abort", onAbort);
    try {
      while (!this.done) {
        if (this.rejected) throw new RequestRejected(this.rejected);
        if (this.failed) throw new EngineFailed(this.failed);
        if (signal?.aborted) return;
        if (this.pending.length === 0) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          this.wake = null;
          continue;
        }
        // Results that queued up while the consumer was busy merge into one update per sample.
        const merged = new Map<number, SampleUpdate>();
        for (const r of this.pending.splice(0)) {
          const u = await this.apply(r);
          const prev = merged.get(u.index);
          if (!prev) merged.set(u.index, u);
          else {
            prev.text += u.text;
            prev.tokenIds.push(...u.tokenIds);
            prev.logprobs.push(...u.logprobs);
            prev.finishReason ??= u.finishReason;
          }
        }
        const updates = [...merged.values()].filter((u) => u.text || u.tokenIds.length || u.finishReason);
        if (updates.length) yield updates;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!this.done) this.abort();
    }
  }

  private async apply(r: TokenResult): Promise<SampleUpdate> {
    const i = r.uid - this.uid;
    const out = this.outputs[i];
    const update: SampleUpdate = { index: i, text: "", tokenIds: [], logprobs: [], finishReason: null };
    if (this.finishes[i]) return update;
    if (r.token >= 0 && !out.stoppedByString) {
      if (out.tokenIds.length === 0) this.cachedTokens = Math.max(this.cachedTokens, r.cachedTokens);
      const before = out.logprobs.length;
      update.text = await out.add(r.token, { logprob: r.logprob, topIds: r.topIds, topLogprobs: r.topLogprobs });
      update.tokenIds.push(r.token);
      update.logprobs = out.logprobs.slice(before);
    }
    if (out.stoppedByString) {
      if (r.finish === Finish.none) this.client.abort(r.uid);
      this.finishes[i] = "stop";
    } else if (r.finish !== Finish.none) {
      this.finishes[i] = NAMES[r.finish] ?? "abort";
    }
    if (this.finishes[i]) {
      update.text += await out.finish();
      update.finishReason = this.finishes[i];
    }
    return update;
  }
}
