// Prometheus text metrics with the names vLLM and SGLang users know.
import type { StepStats } from "../ipc/messages.ts";

const BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60];

class Histogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.counts[i]++;
    });
  }

  render(name: string, help: string): string {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    BUCKETS.forEach((b, i) => lines.push(`${name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${name}_bucket{le="+Inf"} ${this.count}`, `${name}_sum ${this.sum}`, `${name}_count ${this.count}`);
    return lines.join("\n");
  }
}

export class Metrics {
  private last: StepStats = { running: 0, queued: 0, kvUsed: 0, kvTotal: 1, cacheHitTokens: 0, promptTokens: 0, generatedTokens: 0 };
  promptTokens = 0;
  generationTokens = 0;
  cachedPromptTokens = 0;
  lastStepAt = performance.now();
  readonly finished = new Map<string, number>();
  readonly ttft = new Histogram();
  readonly itl = new Histogram();
  readonly e2e = new Histogram();

  onStep(s: StepStats): void {
    this.last = s;
    this.lastStepAt = performance.now();
    this.generationTokens += s.generatedTokens;
  }

  onRequestDone(promptTokens: number, cachedTokens: number, reason: string): void {
    this.promptTokens += promptTokens;
    this.cachedPromptTokens += cachedTokens;
    this.finished.set(reason, (this.finished.get(reason) ?? 0) + 1);
  }

  get kvUsedSlots(): number {
    return this.last.kvUsed;
  }

  render(modelName: string, liveRequests: number): string {
    const label = `{model_name="${modelName}"}`;
    const gauge = (name: string, help: string, v: number) => `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name}${label} ${v}`;
    const counter = (name: string, help: string, v: number) => `# HELP ${name} ${help}\n# TYPE ${name} counter\n${name}${label} ${v}`;
    const hitRate = this.promptTokens ? this.cachedPromptTokens / this.promptTokens : 0;
    return [
      gauge("vllm:num_requests_running", "Requests in the engine's running batch.", this.last.running),
      gauge("vllm:num_requests_waiting", "Requests queued in the engine.", this.last.queued),
      gauge("minisgl:num_requests_live", "Requests the server is waiting on.", liveRequests),
      gauge("vllm:kv_cache_usage_perc", "Fraction of KV slots in use (requests and prefix cache).", this.last.kvUsed / Math.max(1, this.last.kvTotal)),
      gauge("minisgl:kv_cache_used_slots", "KV slots in use.", this.last.kvUsed),
      gauge("sglang:cache_hit_rate", "Prompt tokens served from the prefix cache / prompt tokens.", hitRate),
      counter("vllm:prompt_tokens_total", "Prompt tokens of finished requests.", this.promptTokens),
      counter("vllm:prefix_cache_hits_total", "Prompt tokens served from the prefix cache.", this.cachedPromptTokens),
      counter("vllm:generation_tokens_total", "Generated tokens.", this.generationTokens),
      ...[...this.finished].map(([reason, n]) => `vllm:request_success_total{model_name="${modelName}",finished_reason="${reason}"} ${n}`),
      this.ttft.render("vllm:time_to_first_token_seconds", "Time to first token."),
      this.itl.render("vllm:inter_token_latency_seconds", "Time between tokens of a request."),
      this.e2e.render("vllm:e2e_request_latency_seconds", "End-to-end request latency."),
    ].join("\n") + "\n";
  }
}
