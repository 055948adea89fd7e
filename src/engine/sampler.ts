// Chooses the next token of each row of a logits batch: turns the rows' sampling parameters into the inputs
// of the native sampling ops (one packed upload), runs penalties → logit bias / bans → sample → log-probs,
// writes the tokens into the device token pool (the next decode step's inputs) and starts one download of
// the results, which the caller collects later. Penalties and bias are applied to the logits in place.
// plan() is the host half and run() the device half: rank 0 of a tensor-parallel group plans, and every
// rank runs the same plan on the same logits (so every rank's token pool holds the same tokens).
import type { Backend, DevicePtr } from "../backend/backend.ts";
import { isGreedy, SAMPLING_LIMITS, type SamplingParams } from "./sampling_params.ts";

export interface SamplerRow {
  params: SamplingParams;
  poolRow: number; // the request's page-table row: where its token goes in the token pool
  seed: number; // uint32 effective seed
  step: number; // tokens generated so far
  promptTokens: ArrayLike<number>;
  outputTokens: ArrayLike<number>;
  banned: number[]; // token ids to ban this step (EOS / stop ids before minTokens)
}

export interface SampleResult {
  tokens: Int32Array;
  logprobs?: Float32Array; // [rows]: log-probability of each chosen token
  topIds?: Int32Array; // [rows, topK]
  topLogprobs?: Float32Array; // [rows, topK]
  topK: number;
}

// Per-row parameter sections at the start of the packed input, 4 bytes per row each.
const Section = {
  Temperature: 0, TopK: 1, TopP: 2, MinP: 3, Seed: 4, Step: 5, Presence: 6, Frequency: 7, Repetition: 8, PoolRow: 9,
  Count: 10,
} as const;
// Penalty entries (row, token, output count) and sparse entries (row, token, value) take 3 words each.
const ENTRY_WORDS = 3;

export function hasPenalties(p: SamplingParams): boolean {
  return p.presencePenalty !== 0 || p.frequencyPenalty !== 0 || p.repetitionPenalty !== 1;
}

function wantsLogprobs(p: SamplingParams): boolean {
  return p.logprobs || p.topLogprobs > 0;
}

/** Host-side lists of (row, token, x) entries before packing. */
class Entries {
  readonly rows: number[] = [];
  readonly tokens: number[] = [];
  readonly values: number[] = [];

  push(row: number, token: number, value: number): void {
    this.rows.push(row);
    this.tokens.push(token);
    this.values.push(value);
  }

  get length(): number {
    return this.rows.length;
  }
}

/** What one sample call runs, prepared on the host: the ops to run and their packed inputs. Rank 0 of a
 * tensor-parallel group sends it to the other ranks, which then sample exactly the same tokens. */
export interface SamplingPlan {
  rows: number;
  /** Greedy with no penalties, bans or log-probs: argmax only; the words are just the pool rows. */
  argmaxOnly: boolean;
  /** Log-probabilities with this many top entries per row; -1: none. */
  topK: number;
  penalties: number; // entries at word penaltyAt (rows, tokens, output counts)
  penaltyAt: number;
  sparse: number; // entries at word sparseAt (rows, tokens, f32 values)
  sparseAt: number;
  /** Per-row parameter sections, then the entries; uploaded as they are. */
  words: Int32Array;
}

export class Sampler {
  private inputWords: number;
  private input: DevicePtr;
  private staging: ArrayBuffer;
  private readonly output: DevicePtr;

  constructor(
    private readonly backend: Backend,
    readonly maxRows: number,
    readonly vocab: number,
    private readonly tokenPool: DevicePtr,
  ) {
    if (!Number.isInteger(maxRows) || maxRows < 1) throw new Error(`Sampler: bad maxRows ${maxRows}`);
    if (!Number.isInteger(vocab) || vocab < 1) throw new Error(`Sampler: bad vocab ${vocab}`);
    // Room for a few hundred distinct prompt/output tokens per row before the first re-allocation.
    this.inputWords = Section.Count * maxRows + 2 * ENTRY_WORDS * Math.max(1 << 16, 256 * maxRows);
    this.input = backend.alloc(this.inputWords * 4);
    this.staging = new ArrayBuffer(this.inputWords * 4);
    // tokens [maxRows] | chosen logprobs [maxRows] | top ids [maxRows, k] | top logprobs [maxRows, k]
    this.output = backend.alloc(maxRows * (2 + 2 * SAMPLING_LIMITS.maxTopLogprobs) * 4);
  }

  /** Launches the sampling of `rows`; the returned function waits for the results. */
  sample(logits: DevicePtr, rows: SamplerRow[]): () => SampleResult {
    return this.run(logits, this.plan(rows));
  }

  /** Host work only. The plan's words alias a staging buffer that the next plan() call reuses. */
  plan(rows: SamplerRow[]): SamplingPlan {
    const n = rows.length;
    if (n > this.maxRows) throw new Error(`Sampler: ${n} rows exceed maxRows ${this.maxRows}`);
    const penalties = new Entries();
    const sparse = new Entries();
    let greedy = true;
    let logprobs = false;
    let k = 0;
    rows.forEach((row, r) => {
      const p = row.params;
      greedy &&= isGreedy(p);
      if (wantsLogprobs(p)) {
        logprobs = true;
        k = Math.max(k, p.topLogprobs);
      }
      if (hasPenalties(p)) this.penaltyEntries(penalties, r, row);
      this.sparseEntries(sparse, r, row);
    });
    const argmaxOnly = greedy && !logprobs && penalties.length === 0 && sparse.length === 0;
    const need = Section.Count * n + ENTRY_WORDS * (penalties.length + sparse.length);
    if (need * 4 > this.staging.byteLength) this.staging = new ArrayBuffer(Math.max(need * 4, 2 * this.staging.byteLength));
    const f32 = new Float32Array(this.staging);
    const i32 = new Int32Array(this.staging);
    const u32 = new Uint32Array(this.staging);
    const topK = logprobs ? k : -1;
    if (argmaxOnly) {
      rows.forEach((row, r) => (i32[r] = row.poolRow));
      return { rows: n, argmaxOnly, topK, penalties: 0, penaltyAt: 0, sparse: 0, sparseAt: 0, words: new Int32Array(this.staging, 0, n) };
    }
    rows.forEach((row, r) => {
      const p = row.params;
      f32[Section.Temperature * n + r] = p.temperature;
      i32[Section.TopK * n + r] = p.topK;
      f32[Section.TopP * n + r] = p.topP;
      f32[Section.MinP * n + r] = p.minP;
      u32[Section.Seed * n + r] = row.seed >>> 0;
      i32[Section.Step * n + r] = row.step;
      f32[Section.Presence * n + r] = p.presencePenalty;
      f32[Section.Frequency * n + r] = p.frequencyPenalty;
      f32[Section.Repetition * n + r] = p.repetitionPenalty;
      i32[Section.PoolRow * n + r] = row.poolRow;
    });
    let word = Section.Count * n;
    const pack = (e: Entries, values: Int32Array | Float32Array): number => {
      const at = word;
      i32.set(e.rows, at);
      i32.set(e.tokens, at + e.length);
      values.set(e.values, at + 2 * e.length);
      word += ENTRY_WORDS * e.length;
      return at;
    };
    const penaltyAt = pack(penalties, i32);
    const sparseAt = pack(sparse, f32);
    return {
      rows: n, argmaxOnly, topK, penalties: penalties.length, penaltyAt, sparse: sparse.length, sparseAt,
      words: new Int32Array(this.staging, 0, word),
    };
  }

  /** Launches a plan on the logits (penalties and bias are applied to them in place), writes the tokens
   * into the token pool, and starts the download; the returned function waits for the results. */
  run(logits: DevicePtr, plan: SamplingPlan): () => SampleResult {
    const n = plan.rows;
    if (n > this.maxRows) throw new Error(`Sampler: ${n} rows exceed maxRows ${this.maxRows}`);
    const ops = this.backend.ops;
    const out = this.output;
    this.ensureCapacity(plan.words.length);
    this.backend.upload(this.input, plan.words);
    if (plan.argmaxOnly) {
      ops.argmax(out, logits, n, this.vocab);
      ops.scatterTokens(this.tokenPool, this.input, out, n); // the words are the pool rows
      return this.download(n, -1);
    }
    const at = (w: number): DevicePtr => this.input + w * 4;
    const param = (s: number): DevicePtr => at(s * n);
    if (plan.penalties > 0) {
      const e = plan.penalties;
      ops.applyPenalties(logits, this.vocab, e, at(plan.penaltyAt), at(plan.penaltyAt + e), at(plan.penaltyAt + 2 * e),
        param(Section.Presence), param(Section.Frequency), param(Section.Repetition));
    }
    if (plan.sparse > 0) {
      const e = plan.sparse;
      ops.addSparse(logits, this.vocab, e, at(plan.sparseAt), at(plan.sparseAt + e), at(plan.sparseAt + 2 * e));
    }
    ops.sample(out, logits, n, this.vocab, param(Section.Temperature), param(Section.TopK), param(Section.TopP),
      param(Section.MinP), param(Section.Seed), param(Section.Step));
    ops.scatterTokens(this.tokenPool, param(Section.PoolRow), out, n);
    // After sample (it needs the chosen tokens); sample leaves the logits unchanged.
    const k = plan.topK;
    if (k >= 0) {
      ops.logprobs(out + n * 4, k > 0 ? out + 2 * n * 4 : 0, k > 0 ? out + (2 + k) * n * 4 : 0, logits, out, n, this.vocab, k);
    }
    return this.download(n, k);
  }

  free(): void {
    this.backend.free(this.input);
    this.backend.free(this.output);
  }

  /** Counts prompt and output tokens; prompt-only tokens matter only to the repetition penalty. */
  private penaltyEntries(e: Entries, r: number, row: SamplerRow): void {
    const counts = new Map<number, number>();
    if (row.params.repetitionPenalty !== 1) {
      for (let i = 0; i < row.promptTokens.length; i++) counts.set(row.promptTokens[i], 0);
    }
    for (let i = 0; i < row.outputTokens.length; i++) {
      const t = row.outputTokens[i];
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    for (const [token, count] of counts) e.push(r, token, count);
  }

  /** logit_bias and bans merged per token, since the op wants unique (row, token) pairs. */
  private sparseEntries(e: Entries, r: number, row: SamplerRow): void {
    const bias = Object.entries(row.params.logitBias);
    if (bias.length === 0 && row.banned.length === 0) return;
    const values = new Map<number, number>();
    for (const [token, value] of bias) values.set(Number(token), value);
    for (const token of row.banned) values.set(token, -Infinity);
    for (const [token, value] of values) e.push(r, token, value);
  }

  private ensureCapacity(words: number): void {
    if (words <= this.inputWords) return;
    // Rare (thousands of distinct penalized tokens): wait until no op still reads the old buffer.
    this.backend.synchronize();
    this.backend.free(this.input);
    this.inputWords = Math.max(words, 2 * this.inputWords);
    this.input = this.backend.alloc(this.inputWords * 4);
  }

  /** k < 0: tokens only. */
  private download(n: number, k: number): () => SampleResult {
    const words = k < 0 ? n : (2 + 2 * k) * n;
    const wait = this.backend.downloadLater(this.output, words * 4);
    return () => {
      const host = wait().buffer as ArrayBuffer;
      const result: SampleResult = { tokens: new Int32Array(host, 0, n), topK: Math.max(k, 0) };
      if (k >= 0) result.logprobs = new Float32Array(host, n * 4, n);
      if (k > 0) {
        result.topIds = new Int32Array(host, 2 * n * 4, n * k);
        result.topLogprobs = new Float32Array(host, (2 + k) * n * 4, n * k);
      }
      return result;
    };
  }
}
