// One sample's output on the main thread: incremental detokenization, stop strings matched on the text
// (also across token boundaries) and trimmed, and text released only once no stop string can still match.
import { IncrementalDetokenizer } from "../tokenizer/detokenizer.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { SamplingParams } from "./sampling_params.ts";

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

export class SampleOutput {
  readonly tokenIds: number[] = [];
  readonly logprobs: TokenLogprob[] = [];
  private text = "";
  private released = 0;
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly holdBack: number;
  /** Set when a stop string matched: the engine request should be aborted, later tokens ignored. */
  stoppedByString = false;

  constructor(
    tokenizer: TextTokenizer,
    private readonly params: SamplingParams,
  ) {
    this.detokenizer = new IncrementalDetokenizer(tokenizer, { skipSpecialTokens: params.skipSpecialTokens });
    this.holdBack = params.stop.reduce((m, s) => Math.max(m, s.length - 1), 0);
  }

  /** Adds one token; returns the text that became final. */
  async add(token: number, logprob?: { logprob: number; topIds: ArrayLike<number>; topLogprobs: ArrayLike<number> }): Promise<string> {
    if (this.stoppedByString) return "";
    this.tokenIds.push(token);
    if (logprob && this.params.logprobs) {
      const top = Array.from(logprob.topIds, (id, i) => ({ token: id, logprob: logprob.topLogprobs[i] }));
      this.logprobs.push({ token, logprob: logprob.logprob, top });
    }
    const searchFrom = Math.max(0, this.text.length - this.holdBack);
    this.text += await this.detokenizer.push([token]);
    this.matchStops(searchFrom);
    return this.release(false);
  }

  /** The request ended: releases everything held back (after a final stop-string check). */
  async finish(): Promise<string> {
    if (!this.stoppedByString) {
      const searchFrom = Math.max(0, this.text.length - this.holdBack);
      this.text += await this.detokenizer.flush();
      this.matchStops(searchFrom);
    }
    return this.release(true);
  }

  get fullText(): string {
    return this.text;
  }

  private matchStops(from: number): void {
    let cut = -1;
    for (const stop of this.params.stop) {
      const at = this.text.indexOf(stop, from);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      this.stoppedByString = true;
    }
  }

  private release(all: boolean): string {
    const end = all || this.stoppedByString ? this.text.length : Math.max(this.released, this.text.length - this.holdBack);
    const delta = this.text.slice(this.released, end);
    this.released = end;
    return delta;
  }
}
