// Splits Qwen3-style "<think>…</think>" output into reasoning_content and content, also when the tags
// arrive split across streamed chunks.
const OPEN = "<think>";
const CLOSE = "</think>";

export class ReasoningSplitter {
  private buffer = "";
  private phase: "start" | "reasoning" | "content" = "start";
  private afterThink = false; // drop the newlines that follow </think>, even when they arrive later

  /** Feeds newly final text; returns the parts that are now certain. */
  push(text: string, final = false): { reasoning: string; content: string } {
    this.buffer += text;
    let reasoning = "";
    let content = "";
    if (this.phase === "start") {
      const trimmed = this.buffer.trimStart();
      if (trimmed.startsWith(OPEN)) {
        this.buffer = trimmed.slice(OPEN.length);
        this.phase = "reasoning";
      } else if (final || trimmed.length >= OPEN.length || !OPEN.startsWith(trimmed)) {
        this.phase = "content";
      } else {
        return { reasoning, content };
      }
    }
    if (this.phase === "reasoning") {
      const end = this.buffer.indexOf(CLOSE);
      if (end >= 0) {
        reasoning = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + CLOSE.length);
        this.phase = "content";
        this.afterThink = true;
      } else {
        const keep = final ? 0 : CLOSE.length - 1; // a tag may be split across chunks
        reasoning = this.buffer.slice(0, Math.max(0, this.buffer.length - keep));
        this.buffer = this.buffer.slice(reasoning.length);
        return { reasoning, content };
      }
    }
    if (this.afterThink) {
      this.buffer = this.buffer.replace(/^\n+/, "");
      if (this.buffer) this.afterThink = false;
    }
    content = this.buffer;
    this.buffer = "";
    return { reasoning, content };
  }
}
