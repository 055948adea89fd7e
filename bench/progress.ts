// Request progress of a benchmark run: a redrawn line on a terminal (stderr), nothing elsewhere, so logs and
// --json output stay clean.
import { progressLine, type ProgressStream } from "../src/hub/progress_bar.ts";

const REDRAW_MS = 200;

export class RequestProgress {
  private done = 0;
  private outputTokens = 0;
  private lastDraw = -Infinity;
  private readonly started = performance.now();

  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly stream: ProgressStream = process.stderr,
  ) {}

  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  /** One request finished with `outputTokens` generated tokens. */
  finished(outputTokens: number): void {
    this.done++;
    this.outputTokens += outputTokens;
    this.draw(this.done === this.total);
  }

  private draw(last: boolean): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (!last && now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? ` ${(this.outputTokens / seconds).toFixed(0)} output tok/s` : "";
    const detail = `${this.done}/${this.total} requests, ${seconds.toFixed(1)} s${rate}`;
    this.stream.write(progressLine(this.label, this.done / this.total, detail, this.stream.columns, last));
  }
}
