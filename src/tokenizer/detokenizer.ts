import type { TextTokenizer } from "./tokenizer.ts";

const REPLACEMENT_CHAR = "\uFFFD";

export type DetokenizerOptions = { skipSpecialTokens?: boolean };

/**
 * Streams text from generated ids without ever emitting a partial UTF-8 sequence.
 *
 * Uses the prefix/read offset technique of text-generation-inference and vLLM: `window` holds the ids
 * from the prefix offset on, of which the first `readIndex` were already emitted. Each push decodes the
 * window and its already-emitted head; the difference is new text, emitted only when it does not end in
 * U+FFFD (an incomplete byte sequence). Decoding the already-emitted head as well, rather than just the
 * new ids, keeps context-dependent decoders (leading-space stripping) consistent. Ids before the prefix
 * offset are dropped, so each step costs O(window).
 *
 * Calls must be sequential: await each push before the next one.
 */
export class IncrementalDetokenizer {
  private window: number[] = [];
  private readIndex = 0;
  private emitted = "";
  private readonly skipSpecialTokens: boolean;

  constructor(
    private readonly tokenizer: TextTokenizer,
    options: DetokenizerOptions = {},
  ) {
    this.skipSpecialTokens = options.skipSpecialTokens ?? true;
  }

  get text(): string {
    return this.emitted;
  }

  async push(ids: number[]): Promise<string> {
    if (ids.length === 0) return "";
    for (const id of ids) this.window.push(id);
    const [prefixText, newText] = await this.decodeWindow();
    if (newText.endsWith(REPLACEMENT_CHAR)) return "";
    const piece = newText.slice(prefixText.length);
    // Everything up to here decoded cleanly: the read offset becomes the new prefix offset.
    this.window = this.window.slice(this.readIndex);
    this.readIndex = this.window.length;
    this.emitted += piece;
    return piece;
  }

  /** Emits whatever is held back; contains U+FFFD only if the stream really ended mid-character. */
  async flush(): Promise<string> {
    if (this.readIndex === this.window.length) return "";
    const [prefixText, newText] = await this.decodeWindow();
    const piece = newText.slice(prefixText.length);
    this.window = [];
    this.readIndex = 0;
    this.emitted += piece;
    return piece;
  }

  private async decodeWindow(): Promise<[string, string]> {
    if (this.readIndex === 0) {
      return ["", await this.tokenizer.decode(this.window, this.skipSpecialTokens)];
    }
    const [prefixText, newText] = await this.tokenizer.decodeBatch(
      [this.window.slice(0, this.readIndex), this.window],
      this.skipSpecialTokens,
    );
    return [prefixText, newText];
  }
}
