// One request's state inside the engine: its tokens, its KV slots and its share of the prefix cache.
import type { CacheHandle } from "../cache/prefix_cache.ts";
import type { SamplingParams } from "./sampling_params.ts";

export type FinishReason = "stop" | "length" | "abort";

export class Request {
  readonly output: number[] = [];
  /** The latest sampled token while its post-processing lags (overlap scheduling); it is already the
   * input of the next decode step. */
  pendingToken: number | null = null;
  /** Page-table row while running; -1 while queued or after release. */
  row = -1;
  /** Token-level KV slot of every position that has (or will have) KV; capacity prompt + maxTokens. */
  readonly slots: Int32Array;
  /** Slots [0, cachedLength) belong to the prefix cache (locked through `handle`); the rest up to
   * `allocatedLength` are this request's own whole pages. */
  cachedLength = 0;
  allocatedLength = 0;
  handle: CacheHandle | null = null;
  /** Tokens whose KV has been computed. */
  computedLength = 0;
  /** Prompt tokens found in the prefix cache at admission (reported to the user). */
  cachedPromptTokens = 0;
  finish: FinishReason | null = null;
  /** Set by abort(); the scheduler ends the request at the next step boundary. */
  abortRequested = false;

  constructor(
    readonly uid: number,
    readonly prompt: Int32Array,
    readonly params: SamplingParams,
    readonly seed: number,
    /** For the 2nd..nth sample of one prompt: the uid whose prefill must land in the cache first. */
    readonly leaderUid: number | null = null,
    pageSize = 1,
  ) {
    this.slots = new Int32Array(Math.ceil((prompt.length + params.maxTokens) / pageSize) * pageSize);
  }

  /** Every token so far: prompt then output. */
  get length(): number {
    return this.prompt.length + this.output.length;
  }

  tokenAt(i: number): number {
    if (i < this.prompt.length) return this.prompt[i];
    const j = i - this.prompt.length;
    return j < this.output.length ? this.output[j] : (this.pendingToken ?? -1);
  }

  /** Generated tokens including the pending one. */
  get generated(): number {
    return this.output.length + (this.pendingToken === null ? 0 : 1);
  }

  generatedTokens(): ArrayLike<number> {
    return this.pendingToken === null ? this.output : [...this.output, this.pendingToken];
  }

  /** Tokens [0, n) as one array (prompt + output). */
  tokens(n = this.length): Int32Array {
    const out = new Int32Array(n);
    out.set(this.prompt.subarray(0, Math.min(n, this.prompt.length)));
    for (let i = this.prompt.length; i < n; i++) out[i] = this.output[i - this.prompt.length];
    return out;
  }

  get prefillDone(): boolean {
    return this.computedLength >= this.prompt.length;
  }

  /** Worst-case tokens of KV this request can ever hold. */
  get maxLength(): number {
    return this.prompt.length + this.params.maxTokens;
  }
}
