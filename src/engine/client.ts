// Main-thread side of a rank worker: spawns it with a ready handshake, writes requests into the request
// ring, and drains the result ring (Atomics.waitAsync), dispatching each result to its request's handler.
import { SharedRing } from "../ipc/ring.ts";
import {
  decodeResult, encodeAbort, encodeFlush, encodeNewRequest, encodeShutdown, type StepStats, type TokenResult,
} from "../ipc/messages.ts";
import type { RankInit, RankReady } from "../../workers/rank.ts";
import type { SamplingParams } from "./sampling_params.ts";

export interface RequestHandlers {
  onResult(r: TokenResult): void; // tokens and the final entry (finish ≠ none)
  onError(message: string): void; // rejected by the engine; no other reply follows
}

const RING_WORDS = 1 << 22; // 16 MiB per ring

export class EngineClient {
  private readonly handlers = new Map<number, RequestHandlers>();
  private readonly flushes = new Map<number, (ok: boolean) => void>();
  private nextFlush = 1;
  private draining: Promise<void>;
  private exited: Promise<void>;
  onStats: ((s: StepStats) => void) | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly requests: SharedRing,
    private readonly results: SharedRing,
    readonly info: RankReady,
    exited: Promise<void>,
  ) {
    this.exited = exited;
    this.draining = this.drain();
  }

  static async start(device: RankInit["device"], engine: RankInit["engine"]): Promise<EngineClient> {
    const requests = SharedRing.create(RING_WORDS);
    const results = SharedRing.create(RING_WORDS);
    const worker = new Worker(new URL("../../workers/rank.ts", import.meta.url).href);
    let onExit = () => {};
    const exited = new Promise<void>((resolve) => (onExit = resolve));
    const ready = await new Promise<RankReady>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent) => {
        if (e.data?.type === "ready") resolve(e.data as RankReady);
        else if (e.data?.type === "error") reject(new Error(`rank 0 failed to start: ${e.data.message}`));
        else if (e.data?.type === "exited") onExit();
      };
      worker.onerror = (e) => reject(new Error(`rank 0 crashed: ${e.message}`));
      const init: RankInit = { rank: 0, device, requestRing: requests.buffer, resultRing: results.buffer, engine };
      worker.postMessage(init);
    });
    return new EngineClient(worker, requests, results, ready, exited);
  }

  /** Queues a request; false when the request ring is full (the caller answers 503 / retries). */
  submit(uid: number, prompt: ArrayLike<number>, params: SamplingParams, handlers: RequestHandlers): boolean {
    if (!this.requests.tryWrite(encodeNewRequest(uid, Int32Array.from(prompt), params))) return false;
    for (let i = 0; i < params.n; i++) this.handlers.set(uid + i, handlers);
    this.requests.notify();
    return true;
  }

  abort(uid: number): void {
    if (!this.handlers.has(uid)) return;
    while (!this.requests.tryWrite(encodeAbort(uid))) Bun.sleepSync(1);
    this.requests.notify();
  }

  flush(): Promise<boolean> {
    const uid = this.nextFlush++;
    return new Promise((resolve) => {
      this.flushes.set(uid, resolve);
      while (!this.requests.tryWrite(encodeFlush(uid))) Bun.sleepSync(1);
      this.requests.notify();
    });
  }

  get liveRequests(): number {
    return this.handlers.size;
  }

  private async drain(): Promise<void> {
    while (true) {
      for (let words = this.results.read(); words; words = this.results.read()) this.dispatch(words);
      if ((await this.results.waitForDataAsync(1000)) === "closed") break;
    }
    for (let words = this.results.read(); words; words = this.results.read()) this.dispatch(words);
  }

  private dispatch(words: Int32Array): void {
    const m = decodeResult(words);
    if (m.kind === "stepResults") {
      this.onStats?.(m.stats);
      for (const r of m.results) {
        const h = this.handlers.get(r.uid);
        if (!h) continue;
        if (r.finish !== 0) this.handlers.delete(r.uid);
        h.onResult(r);
      }
    } else if (m.kind === "requestError") {
      const h = this.handlers.get(m.uid);
      if (!h) return;
      for (const [uid, other] of this.handlers) if (other === h) this.handlers.delete(uid); // its n samples
      h.onError(m.message);
    } else {
      this.flushes.get(m.uid)?.(m.ok);
      this.flushes.delete(m.uid);
    }
  }

  /** Cooperative shutdown: live requests end with "abort", the worker frees its memory and exits. */
  async close(): Promise<void> {
    if (!this.requests.closed) {
      while (!this.requests.tryWrite(encodeShutdown())) Bun.sleepSync(1);
      this.requests.notify();
    }
    await this.draining;
    await this.exited;
    this.requests.close();
    this.worker.terminate();
  }
}
