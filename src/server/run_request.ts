// Starts one request for a route and feeds the metrics: time to first token, inter-token latency,
// end-to-end latency, token counters. Engine rejections and a full queue become API errors.
import { QueueFull, RequestRejected, RequestStream, type SampleUpdate } from "../engine/request_stream.ts";
import type { SamplingParams } from "../engine/sampling_params.ts";
import { checkAdmission, type ServerContext } from "./context.ts";
import { ApiError } from "./errors.ts";

export class RunningRequest {
  readonly stream: RequestStream;
  private readonly started = performance.now();
  private lastTokenAt = 0;

  constructor(
    private readonly ctx: ServerContext,
    prompt: number[],
    readonly params: SamplingParams,
  ) {
    checkAdmission(ctx);
    try {
      this.stream = new RequestStream(ctx.client, ctx.tokenizer, ctx.allocUids(params.n), prompt, params);
    } catch (e) {
      if (e instanceof QueueFull) throw new ApiError(503, e.message);
      throw e;
    }
  }

  /** Per-step updates; ends when every sample has finished or the client went away. */
  async *updates(signal: AbortSignal): AsyncGenerator<SampleUpdate[]> {
    this.ctx.inflight.count++;
    try {
      for await (const step of this.stream.updates(signal)) {
        if (step.some((u) => u.tokenIds.length > 0)) {
          const now = performance.now();
          if (this.lastTokenAt === 0) this.ctx.metrics.ttft.observe((now - this.started) / 1000);
          else this.ctx.metrics.itl.observe((now - this.lastTokenAt) / 1000);
          this.lastTokenAt = now;
        }
        yield step;
      }
    } catch (e) {
      if (e instanceof RequestRejected) throw new ApiError(400, e.message);
      throw e;
    } finally {
      this.ctx.inflight.count--;
      const reason = signal.aborted ? "abort" : (this.stream.finishes.find((f) => f !== null) ?? "abort");
      this.ctx.metrics.e2e.observe((performance.now() - this.started) / 1000);
      this.ctx.metrics.onRequestDone(this.stream.prompt.length, this.stream.cachedTokens, reason);
    }
  }

  /** Runs to the end (non-streaming responses). */
  async collect(signal: AbortSignal): Promise<void> {
    for await (const _ of this.updates(signal));
  }

  usage() {
    const prompt = this.stream.prompt.length;
    const completion = this.stream.completionTokens;
    return {
      prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: this.stream.cachedTokens },
    };
  }
}
