// Which requests run in the next forward, and what happens to them after it. Prefill first (chunked to
// the token budget, a chunked request continuing first), otherwise decode of every running request.
import type { ForwardBatch } from "../model/forward_batch.ts";
import type { KvManager } from "./kv_manager.ts";
import type { FinishReason, Request } from "./request.ts";

export interface SchedulerLimits {
  maxRunningRequests: number;
  maxPrefillLength: number; // new prompt tokens per prefill step
  maxSeqLen: number; // context length
}

export interface ScheduledStep {
  batch: ForwardBatch;
  requests: Request[]; // one per batch row
  chunkLengths: number[]; // new tokens per request
  /** Rows whose forward produces a token (decode rows, and prefill rows that finish their prompt). */
  sampleRows: number[];
}

export interface RequestEnd {
  request: Request;
  reason: FinishReason;
}

export class Scheduler {
  readonly waiting: Request[] = [];
  readonly running: Request[] = []; // admitted, prefilled or being prefilled
  private chunked: Request | null = null;
  private readonly freeRows: number[];
  /** Leaders whose prompt is not yet in the cache → followers waiting for it (n > 1 samples). */
  private readonly followers = new Map<number, Request[]>();

  constructor(
    private readonly kv: KvManager,
    private readonly limits: SchedulerLimits,
  ) {
    this.freeRows = Array.from({ length: limits.maxRunningRequests }, (_, i) => limits.maxRunningRequests - 1 - i);
  }

  /** Queues a request, or returns why it can never run. */
  add(r: Request): string | null {
    if (r.prompt.length === 0) return "the prompt is empty";
    if (r.maxLength > this.limits.maxSeqLen) {
      return `the prompt (${r.prompt.length} tokens) plus max_tokens (${r.params.maxTokens}) is ${r.maxLength} tokens, ` +
        `over the context length of ${this.limits.maxSeqLen}`;
    }
    if (!this.kv.fitsPool(r)) {
      return `the prompt (${r.prompt.length} tokens) plus max_tokens (${r.params.maxTokens}) needs more KV cache than ` +
        `the whole pool holds (${this.kv.pool.totalSlots} tokens)`;
    }
    if (r.leaderUid !== null && this.isPending(r.leaderUid)) {
      const list = this.followers.get(r.leaderUid) ?? [];
      list.push(r);
      this.followers.set(r.leaderUid, list);
    } else {
      this.waiting.push(r);
    }
    return null;
  }

  private isPending(uid: number): boolean {
    const hasUid = (r: Request) => r.uid === uid && !r.prefillDone;
    return this.waiting.some(hasUid) || this.running.some(hasUid);
  }

  /** Marks a request to end; queued ones end now (returned), running ones at the next step boundary. */
  abort(uid: number): Request | null {
    for (const list of [this.waiting, ...this.followers.values()]) {
      const i = list.findIndex((r) => r.uid === uid);
      if (i >= 0) {
        const [r] = list.splice(i, 1);
        this.releaseFollowers(uid);
        return r;
      }
    }
    const r = this.running.find((x) => x.uid === uid);
    if (r) r.abortRequested = true;
    return null;
  }

  get hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  get queued(): number {
    let n = this.waiting.length;
    for (const list of this.followers.values()) n += list.length;
    return n;
  }

  /** Ends running requests marked for abort, returning them. */
  collectAborted(): Request[] {
    const aborted = this.running.filter((r) => r.abortRequested);
    for (const r of aborted) this.end(r, "abort");
    return aborted;
  }

  next(): ScheduledStep | null {
    return this.nextPrefill() ?? this.nextDecode();
  }

  private nextPrefill(): ScheduledStep | null {
    let budget = this.limits.maxPrefillLength;
    const picked: Request[] = [];
    const chunks: number[] = [];
    const take = (r: Request) => {
      const chunk = Math.min(r.prompt.length - r.computedLength, budget);
      picked.push(r);
      chunks.push(chunk);
      budget -= chunk;
      this.chunked = r.computedLength + chunk < r.prompt.length ? r : null;
    };
    if (this.chunked) take(this.chunked);
    while (!this.chunked && budget > 0 && this.waiting.length > 0 && this.freeRows.length > 0) {
      const r = this.waiting[0];
      const row = this.freeRows[this.freeRows.length - 1];
      if (!this.kv.tryAdmit(r, row)) break; // head of line waits for KV to free up
      this.freeRows.pop();
      this.waiting.shift();
      this.running.push(r);
      take(r);
    }
    if (picked.length === 0) return null;
    return this.build(picked, chunks, "prefill");
  }

  private nextDecode(): ScheduledStep | null {
    const ready = this.running.filter((r) => r.prefillDone && r.finish === null);
    if (ready.length === 0) return null;
    return this.build(ready, ready.map(() => 1), "decode");
  }

  private build(requests: Request[], chunks: number[], mode: "prefill" | "decode"): ScheduledStep {
    const tokens = chunks.reduce((a, b) => a + b, 0);
    const batch: ForwardBatch = {
      mode,
      inputIds: new Int32Array(tokens),
      positions: new Int32Array(tokens),
      outSlots: new Int32Array(tokens),
      qoIndptr: new Int32Array(requests.length + 1),
      kvLens: new Int32Array(requests.length),
      rows: new Int32Array(requests.length),
    };
    const sampleRows: number[] = [];
    let t = 0;
    requests.forEach((r, b) => {
      const start = r.computedLength;
      const end = start + chunks[b];
      this.kv.ensureSlots(r, end);
      for (let p = start; p < end; p++, t++) {
        batch.inputIds[t] = r.tokenAt(p);
        batch.positions[t] = p;
        batch.outSlots[t] = r.slots[p];
      }
      batch.qoIndptr[b + 1] = t;
      batch.kvLens[b] = end;
      batch.rows[b] = r.row;
      if (end >= r.prompt.length) sampleRows.push(b);
    });
    return { batch, requests, chunkLengths: chunks, sampleRows };
  }

  /** After the forward: KV of the batch's tokens exists; prefill chunks are handed to the cache. */
  afterForward(step: ScheduledStep): void {
    step.requests.forEach((r, b) => {
      const wasPrefill = !r.prefillDone;
      r.computedLength += step.chunkLengths[b];
      if (wasPrefill) {
        this.kv.cacheComputed(r);
        if (r.prefillDone) this.releaseFollowers(r.uid);
      }
    });
  }

  private releaseFollowers(uid: number): void {
    const list = this.followers.get(uid);
    if (!list) return;
    this.followers.delete(uid);
    this.waiting.unshift(...list);
  }

  /** Returns the request's KV and row; it leaves the running set. */
  end(r: Request, reason: FinishReason): void {
    r.finish = reason;
    if (this.chunked === r) this.chunked = null;
    const row = r.row;
    this.kv.release(r);
    if (row >= 0) this.freeRows.push(row);
    const i = this.running.indexOf(r);
    if (i >= 0) this.running.splice(i, 1);
    this.releaseFollowers(r.uid);
  }
}
