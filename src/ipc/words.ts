// Cursors that write and read typed fields as Int32 words: the building blocks of the record layouts.

const scratch = new ArrayBuffer(4);
const scratchF32 = new Float32Array(scratch);
const scratchI32 = new Int32Array(scratch);
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchI32[0];
}

export function bitsF32(w: number): number {
  scratchI32[0] = w;
  return scratchF32[0];
}

export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Words taken by a byte string: one length word plus the bytes padded to whole words. */
export function bytesWords(bytes: Uint8Array): number {
  return 1 + Math.ceil(bytes.length / 4);
}

function checkInt(x: number, lo: number, hi: number, what: string): number {
  if (!Number.isInteger(x) || x < lo || x > hi) throw new RangeError(`${what} must be an integer in [${lo}, ${hi}] (got ${x})`);
  return x;
}

export class WordWriter {
  readonly out: Int32Array;
  private pos = 0;

  constructor(words: number) {
    this.out = new Int32Array(words);
  }

  i32(x: number, what = "value"): void {
    this.out[this.pos++] = checkInt(x, -0x8000_0000, 0x7fff_ffff, what);
  }

  u32(x: number, what = "value"): void {
    this.out[this.pos++] = checkInt(x, 0, 0xffff_ffff, what);
  }

  f32(x: number): void {
    this.out[this.pos++] = f32Bits(x);
  }

  /** Copies ids; plain arrays are range-checked because Int32Array.set would wrap them silently. */
  i32s(xs: Int32Array | readonly number[], what: string): void {
    if (!(xs instanceof Int32Array)) for (const x of xs) checkInt(x, -0x8000_0000, 0x7fff_ffff, what);
    this.out.set(xs, this.pos);
    this.pos += xs.length;
  }

  bytes(b: Uint8Array): void {
    this.out[this.pos++] = b.length;
    new Uint8Array(this.out.buffer, this.out.byteOffset + this.pos * 4, b.length).set(b);
    this.pos += Math.ceil(b.length / 4);
  }

  /** The record, after checking that its size was computed right. */
  done(): Int32Array {
    if (this.pos !== this.out.length) throw new Error(`record size mismatch: wrote ${this.pos} of ${this.out.length} words`);
    return this.out;
  }
}

export class WordReader {
  private pos = 0;

  constructor(private readonly words: Int32Array) {}

  private take(n: number): number {
    if (n < 0 || this.pos + n > this.words.length) throw new Error(`truncated record: need ${n} words at ${this.pos} of ${this.words.length}`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  i32(): number {
    return this.words[this.take(1)];
  }

  u32(): number {
    return this.words[this.take(1)] >>> 0;
  }

  f32(): number {
    return bitsF32(this.words[this.take(1)]);
  }

  i32s(n: number): Int32Array {
    const at = this.take(n);
    return this.words.slice(at, at + n);
  }

  string(): string {
    const length = this.i32();
    const at = this.take(Math.ceil(length / 4));
    // A copy: TextDecoder refuses views of shared memory, and the ring's buffer may be one.
    return utf8Decoder.decode(new Uint8Array(this.words.buffer, this.words.byteOffset + at * 4, length).slice());
  }

  /** Throws unless the whole record was consumed (catches layout mismatches between the two sides). */
  end(): void {
    if (this.pos !== this.words.length) throw new Error(`record has ${this.words.length - this.pos} trailing words`);
  }
}
