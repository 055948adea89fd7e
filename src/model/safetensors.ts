// safetensors reader (mmap, zero-copy views), writer, sharded checkpoints, and bf16 conversion.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, join } from "node:path";

export type SafeDType =
  | "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2"
  | "U16" | "I16" | "F16" | "BF16"
  | "U32" | "I32" | "F32"
  | "U64" | "I64" | "F64";

export const DTYPE_BYTES: Readonly<Record<SafeDType, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  U16: 2, I16: 2, F16: 2, BF16: 2,
  U32: 4, I32: 4, F32: 4,
  U64: 8, I64: 8, F64: 8,
};

export interface TensorView {
  name: string;
  file: string;
  dtype: SafeDType;
  shape: number[];
  /** Zero-copy view into the privately mmap'd file; writes never reach the file. */
  data: Uint8Array;
}

export class SafetensorsError extends Error {
  constructor(message: string, readonly file: string, readonly tensor?: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function isDType(x: unknown): x is SafeDType {
  return typeof x === "string" && Object.hasOwn(DTYPE_BYTES, x);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Product of the shape, or -1 if it is not a safe integer. */
function numel(shape: number[]): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return -1;
  }
  return n;
}

export function readSafetensors(path: string): Map<string, TensorView> {
  const err = (msg: string, tensor?: string) =>
    new SafetensorsError(tensor === undefined ? `${path}: ${msg}` : `${path}: tensor "${tensor}": ${msg}`, path, tensor);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw err(`cannot open (${(e as Error).message})`);
  }
  if (!st.isFile()) throw err("not a regular file");
  const size = st.size;
  if (size < 8) throw err(`file is ${size} bytes, shorter than the 8-byte header length`);
  // MAP_PRIVATE: an accidental write to a view is copy-on-write, never written back to the checkpoint.
  const buf = Bun.mmap(path, { shared: false });
  const headerLen = new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw err(`header length ${headerLen} is absurd (> ${MAX_HEADER_BYTES} bytes)`);
  if (headerLen > BigInt(size - 8)) throw err(`header length ${headerLen} exceeds the file size ${size}`);
  const dataStart = 8 + Number(headerLen);
  const dataLen = size - dataStart;

  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(8, dataStart));
    header = JSON.parse(text);
  } catch (e) {
    throw err(`header is not valid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) throw err("header is not a JSON object");

  const out = new Map<string, TensorView>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw err("entry is not an object", name);
    const { dtype, shape, data_offsets: offs } = entry as Record<string, unknown>;
    if (!isDType(dtype)) throw err(`unknown dtype ${JSON.stringify(dtype)}`, name);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw err(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`, name);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isNonNegInt) || offs[0] > offs[1]) {
      throw err(`data_offsets ${JSON.stringify(offs)} is not [begin, end] with 0 <= begin <= end`, name);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLen) throw err(`data_offsets end ${end} is beyond the data region (${dataLen} bytes); file truncated?`, name);
    const n = numel(shape);
    const want = n < 0 ? -1 : n * DTYPE_BYTES[dtype];
    if (want !== end - begin) {
      throw err(`byte size ${end - begin} does not match shape [${shape.join(", ")}] x ${dtype} (${want} bytes)`, name);
    }
    out.set(name, { name, file: path, dtype, shape, data: buf.subarray(dataStart + begin, dataStart + end) });
    if (end > begin) spans.push({ name, begin, end });
  }
  spans.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].begin < spans[i - 1].end) throw err(`overlaps tensor "${spans[i - 1].name}"`, spans[i].name);
  }
  return out;
}

export interface TensorToWrite {
  name: string;
  dtype: SafeDType;
  shape: number[];
  data: Uint8Array;
}

/** Writes through a temporary file and rename, so readers holding an mmap of the old file never see it truncated. */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || Object.hasOwn(header, t.name)) {
      throw new SafetensorsError(`${path}: duplicate or reserved tensor name "${t.name}"`, path, t.name);
    }
    const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (!t.shape.every(isNonNegInt) || want !== t.data.byteLength) {
      throw new SafetensorsError(
        `${path}: tensor "${t.name}": ${t.data.byteLength} bytes given for shape [${t.shape.join(", ")}] x ${t.dtype}`, path, t.name);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data region starts 8-byte aligned, as the reference implementation does.
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);

  const tmp = `${path}.tmp-${process.pid}-${Math.floor(performance.now() * 1000)}`;
  const fd = openSync(tmp, "w");
  try {
    writeAll(fd, prefix);
    writeAll(fd, headerBytes);
    for (const t of tensors) writeAll(fd, t.data);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
}

type CheckpointKind = "single" | "sharded" | "glob";

/** A model directory: model.safetensors, a sharded index, or (failing both) every *.safetensors in it. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly kind: CheckpointKind,
    /** Where a tensor is expected to be listed: the single file, the index file, or the directory. */
    private readonly source: string,
    readonly files: string[],
    private readonly tensors: Map<string, TensorView>,
  ) {}

  static open(dir: string): Checkpoint {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new SafetensorsError(`checkpoint directory ${dir} does not exist`, dir);
    }
    const single = join(dir, "model.safetensors");
    if (existsSync(single)) return new Checkpoint(dir, "single", single, [single], readSafetensors(single));
    const index = join(dir, "model.safetensors.index.json");
    if (existsSync(index)) return Checkpoint.openIndex(dir, index);

    const files = readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort().map((f) => join(dir, f));
    if (files.length === 0) throw new SafetensorsError(`no *.safetensors files in checkpoint directory ${dir}`, dir);
    const all = new Map<string, TensorView>();
    for (const f of files) {
      for (const [name, t] of readSafetensors(f)) {
        const prev = all.get(name);
        if (prev) throw new SafetensorsError(`${f}: tensor "${name}" is also in ${prev.file}`, f, name);
        all.set(name, t);
      }
    }
    return new Checkpoint(dir, "glob", dir, files, all);
  }

  private static openIndex(dir: string, index: string): Checkpoint {
    const err = (msg: string, tensor?: string) => new SafetensorsError(`${index}: ${msg}`, index, tensor);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(index, "utf8"));
    } catch (e) {
      throw err(`not valid JSON (${(e as Error).message})`);
    }
    const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
    if (map === null || typeof map !== "object" || Array.isArray(map)) throw err(`"weight_map" is not an object`);
    const entries = Object.entries(map as Record<string, unknown>);
    const shards = new Map<string, Map<string, TensorView>>();
    for (const [name, shard] of entries) {
      if (typeof shard !== "string" || shard === "" || basename(shard) !== shard) {
        throw err(`weight_map entry for "${name}" is not a plain file name: ${JSON.stringify(shard)}`, name);
      }
      const file = shard as string;
      if (!shards.has(file)) {
        const p = join(dir, file);
        if (!existsSync(p)) throw err(`shard ${file} (for tensor "${name}") does not exist in ${dir}`, name);
        shards.set(file, readSafetensors(p));
      }
    }
    const all = new Map<string, TensorView>();
    for (const [name, shard] of entries) {
      const t = shards.get(shard as string)!.get(name);
      if (!t) throw err(`tensor "${name}" is mapped to ${shard} but that shard does not contain it`, name);
      all.set(name, t);
    }
    const files = [...shards.keys()].sort().map((f) => join(dir, f));
    return new Checkpoint(dir, "sharded", index, files, all);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  get(name: string): TensorView {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`tensor "${name}" not found in checkpoint ${this.source}`, this.source, name);
    return t;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }
}

// ---- bf16 conversion ----

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 bit pattern → bf16 bits, round to nearest even; NaN stays NaN (quieted). */
function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** x is first rounded to f32, then to bf16 (round to nearest even). */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16(scratchU32[0]);
}

export function bf16BitsToF32(b: number): number {
  scratchU32[0] = (b & 0xffff) << 16;
  return scratchF32[0];
}

/** f16 bits → f32 bits (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (man << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (man << 13)) >>> 0;
  if (man === 0) return sign >>> 0;
  let e = 113; // subnormal: renormalize
  while ((man & 0x400) === 0) {
    man <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((man & 0x3ff) << 13)) >>> 0;
}

let f16Table: Uint16Array | null = null;
function f16ToBf16Table(): Uint16Array {
  if (!f16Table) {
    f16Table = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f32BitsToBf16(f16BitsToF32Bits(h));
  }
  return f16Table;
}

/** Typed view of `data` when aligned, else of an aligned copy. */
function aligned<T>(data: Uint8Array, width: number, make: (b: ArrayBufferLike, off: number, n: number) => T): T {
  const n = data.byteLength / width;
  if (data.byteOffset % width === 0) return make(data.buffer, data.byteOffset, n);
  return make(data.slice().buffer, 0, n);
}

/**
 * Tensor values as bf16 bits. BF16 returns a zero-copy view when 2-byte aligned (treat it as read-only);
 * F16 and F32 are converted with round-to-nearest-even.
 */
export function toBf16(t: TensorView): Uint16Array {
  switch (t.dtype) {
    case "BF16":
      return aligned(t.data, 2, (b, o, n) => new Uint16Array(b, o, n));
    case "F16": {
      const src = aligned(t.data, 2, (b, o, n) => new Uint16Array(b, o, n));
      const table = f16ToBf16Table();
      const out = new Uint16Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
      return out;
    }
    case "F32": {
      const src = aligned(t.data, 4, (b, o, n) => new Uint32Array(b, o, n));
      const out = new Uint16Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const bits = src[i];
        out[i] = (bits & 0x7fffffff) > 0x7f800000 ? (bits >>> 16) | 0x40 : (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
      }
      return out;
    }
    default:
      throw new SafetensorsError(`${t.file}: tensor "${t.name}": cannot convert dtype ${t.dtype} to BF16`, t.file, t.name);
  }
}
