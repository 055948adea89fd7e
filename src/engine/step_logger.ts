// The per-batch log lines SGLang users know, at most one of each kind per interval.
import type { StepStats } from "./engine.ts";
import type { ScheduledStep } from "./scheduler.ts";

export class StepLogger {
  private lastPrefill = -Infinity;
  private lastDecode = -Infinity;
  private decodeTokens = 0;
  private decodeSince = performance.now();

  constructor(
    private readonly log: (line: string) => void,
    private readonly intervalMs = Number(process.env.MINISGL_LOG_INTERVAL_MS ?? 1000),
  ) {}

  step(mode: "prefill" | "decode", s: ScheduledStep, stats: StepStats): void {
    const now = performance.now();
    const usage = (stats.kvUsedSlots / stats.kvTotalSlots).toFixed(2);
    if (mode === "prefill") {
      if (now - this.lastPrefill < this.intervalMs) return;
      this.lastPrefill = now;
      this.log(`Prefill batch. #new-seq: ${s.requests.length}, #new-token: ${stats.promptTokens}, ` +
        `#cached-token: ${stats.cachedTokens}, token usage: ${usage}, #running-req: ${stats.running}, #queue-req: ${stats.queued}`);
      return;
    }
    this.decodeTokens += stats.generatedTokens;
    if (now - this.lastDecode < this.intervalMs) return;
    const throughput = (this.decodeTokens * 1000) / Math.max(1, now - this.decodeSince);
    this.lastDecode = now;
    this.decodeSince = now;
    this.decodeTokens = 0;
    this.log(`Decode batch. #running-req: ${stats.running}, #token: ${stats.kvUsedSlots}, token usage: ${usage}, ` +
      `gen throughput (token/s): ${throughput.toFixed(2)}, #queue-req: ${stats.queued}`);
  }
}
