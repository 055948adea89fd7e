import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { ensureFixtures, f32ToF16Bits } from "../scripts/make_fixtures.ts";
import {
  bf16BitsToF32,
  Checkpoint,
  f32ToBf16Bits,
  readSafetensors,
  SafetensorsError,
  toBf16,
  writeSafetensors,
  type SafeDType,
  type TensorView,
} from "../src/model/safetensors.ts";

const tmp = mkdtempSync(join(tmpdir(), "msgl-st-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let fixtures = "";
beforeAll(async () => {
  fixtures = await ensureFixtures();
});

let counter = 0;
function tmpFile(name = "t"): string {
  return join(tmp, `${name}-${counter++}.safetensors`);
}

/** A file with a hand-written header: 8-byte length, header text, data. */
function rawFile(header: string | object, data: Uint8Array = new Uint8Array(0), lenOverride?: bigint): string {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const buf = new Uint8Array(8 + h.length + data.length);
  new DataView(buf.buffer).setBigUint64(0, lenOverride ?? BigInt(h.length), true);
  buf.set(h, 8);
  buf.set(data, 8 + h.length);
  const path = tmpFile("raw");
  writeFileSync(path, buf);
  return path;
}

function expectError(fn: () => unknown, ...parts: string[]): SafetensorsError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  for (const p of parts) expect((err as Error).message).toContain(p);
  return err as SafetensorsError;
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const u16 = (...xs: number[]) => new Uint8Array(Uint16Array.from(xs).buffer);
const u32 = (...xs: number[]) => new Uint8Array(Uint32Array.from(xs).buffer);
const view = (dtype: SafeDType, data: Uint8Array, name = "x"): TensorView => ({
  name, file: "mem", dtype, shape: [data.length / (dtype === "F32" ? 4 : 2)], data,
});

describe("write/read", () => {
  test("roundtrip keeps order, dtypes, shapes and bytes; metadata is ignored", () => {
    const path = tmpFile();
    const tensors = [
      { name: "b.weight", dtype: "BF16" as const, shape: [3, 5], data: bytes(30) },
      { name: "a.f32", dtype: "F32" as const, shape: [2, 2, 2], data: bytes(32, 7) },
      { name: "ids", dtype: "I64" as const, shape: [3], data: bytes(24, 3) },
      { name: "scalar", dtype: "U8" as const, shape: [], data: bytes(1, 9) },
      { name: "empty", dtype: "F16" as const, shape: [0, 4], data: new Uint8Array(0) },
      { name: "i32", dtype: "I32" as const, shape: [1], data: bytes(4, 5) },
    ];
    writeSafetensors(path, tensors, { format: "pt" });
    const m = readSafetensors(path);
    expect([...m.keys()]).toEqual(tensors.map((t) => t.name));
    for (const t of tensors) {
      const r = m.get(t.name)!;
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect(r.file).toBe(path);
      expect(Buffer.from(r.data).equals(Buffer.from(t.data))).toBe(true);
    }
    expect(m.has("__metadata__")).toBe(false);
  });

  test("header is space-padded to a multiple of 8 and views are zero-copy into the mapping", () => {
    const path = tmpFile();
    writeSafetensors(path, [{ name: "w", dtype: "F32", shape: [3], data: bytes(12) }]);
    const raw = readFileSync(path);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(JSON.parse(raw.subarray(8, 8 + n).toString())).toEqual({ w: { dtype: "F32", shape: [3], data_offsets: [0, 12] } });
    expect(raw.length).toBe(8 + n + 12);
    const t = readSafetensors(path).get("w")!;
    expect(t.data.buffer.byteLength).toBe(raw.length);
    expect(t.data.byteOffset).toBe(8 + n);
  });

  test("writer rejects a size mismatch and duplicate names", () => {
    expectError(() => writeSafetensors(tmpFile(), [{ name: "w", dtype: "F32", shape: [3], data: bytes(8) }]), "\"w\"", "8 bytes");
    const t = { name: "w", dtype: "U8" as const, shape: [1], data: bytes(1) };
    expectError(() => writeSafetensors(tmpFile(), [t, t]), "duplicate");
  });
});

describe("malformed files", () => {
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

  test("missing file and files shorter than 8 bytes", () => {
    expectError(() => readSafetensors(join(tmp, "nope.safetensors")), "nope.safetensors", "cannot open");
    for (const n of [0, 5]) {
      const p = tmpFile("short");
      writeFileSync(p, new Uint8Array(n));
      expectError(() => readSafetensors(p), p, "shorter than");
    }
  });

  test("header length beyond the file or absurd", () => {
    const p1 = rawFile({ w: ok }, bytes(8), 1000n);
    expectError(() => readSafetensors(p1), p1, "exceeds the file size");
    const p2 = rawFile({ w: ok }, bytes(8), 1n << 40n);
    expectError(() => readSafetensors(p2), p2, "absurd");
  });

  test("header not JSON, not UTF-8, or not an object", () => {
    for (const h of ["{not json", "[1, 2]", "null", "42"]) {
      const p = rawFile(h);
      expectError(() => readSafetensors(p), p, "header");
    }
    const p = tmpFile("utf8");
    writeFileSync(p, Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]));
    expectError(() => readSafetensors(p), p, "not valid JSON");
  });

  test("bad entries name the tensor", () => {
    const cases: [object, string][] = [
      [{ w: 5 }, "not an object"],
      [{ w: { ...ok, dtype: "F31" } }, "unknown dtype \"F31\""],
      [{ w: { ...ok, shape: "2" } }, "shape"],
      [{ w: { ...ok, shape: [-2] } }, "shape"],
      [{ w: { ...ok, shape: [1.5] } }, "shape"],
      [{ w: { ...ok, data_offsets: [8, 0] } }, "data_offsets"],
      [{ w: { ...ok, data_offsets: [0] } }, "data_offsets"],
      [{ w: { ...ok, data_offsets: ["0", 8] } }, "data_offsets"],
      [{ w: { ...ok, data_offsets: [0, 16] } }, "beyond the data region"],
      [{ w: { ...ok, shape: [3] } }, "byte size 8"],
      [{ w: { ...ok, dtype: "BF16" } }, "byte size 8"],
    ];
    for (const [header, msg] of cases) {
      const p = rawFile({ __metadata__: { a: "b" }, ...header }, bytes(8));
      expectError(() => readSafetensors(p), p, "\"w\"", msg);
    }
  });

  test("overlapping tensors", () => {
    const p = rawFile({ a: { dtype: "U8", shape: [6], data_offsets: [0, 6] }, b: { dtype: "U8", shape: [4], data_offsets: [4, 8] } }, bytes(8));
    expectError(() => readSafetensors(p), p, "\"b\"", "overlaps tensor \"a\"");
  });

  test("a truncated file is caught", () => {
    const p = tmpFile("trunc");
    writeSafetensors(p, [{ name: "a", dtype: "U8", shape: [4], data: bytes(4) }, { name: "last", dtype: "F32", shape: [4], data: bytes(16) }]);
    truncateSync(p, statSync(p).size - 3);
    expectError(() => readSafetensors(p), p, "\"last\"", "truncated");
  });
});

describe("Checkpoint", () => {
  test("sharded checkpoint exposes the same tensors as the single file", () => {
    const single = Checkpoint.open(join(fixtures, "tiny-qwen3"));
    const sharded = Checkpoint.open(join(fixtures, "tiny-qwen3-sharded"));
    expect(single.kind).toBe("single");
    expect(sharded.kind).toBe("sharded");
    expect(sharded.files.length).toBe(2);
    expect(sharded.names().sort()).toEqual(single.names().sort());
    expect(single.names().length).toBe(1 + 2 * 11 + 1); // embed, 11 per layer, final norm (tied: no lm_head)
    for (const name of single.names()) {
      const a = single.get(name);
      const b = sharded.get(name);
      expect(b.shape).toEqual(a.shape);
      expect(b.dtype).toBe("BF16");
      expect(Buffer.from(b.data).equals(Buffer.from(a.data))).toBe(true);
    }
    expect(sharded.get("model.norm.weight").file).toEndWith("model-00002-of-00002.safetensors");
  });

  test("missing tensor names the tensor and where it should be", () => {
    const ck = Checkpoint.open(join(fixtures, "tiny-qwen3"));
    expect(ck.has("lm_head.weight")).toBe(false);
    expect(ck.has("model.norm.weight")).toBe(true);
    expectError(() => ck.get("lm_head.weight"), "\"lm_head.weight\"", join(fixtures, "tiny-qwen3", "model.safetensors"));
    const sh = Checkpoint.open(join(fixtures, "tiny-qwen3-sharded"));
    expectError(() => sh.get("lm_head.weight"), "\"lm_head.weight\"", "model.safetensors.index.json");
  });

  function shardedCopy(mutate: (index: { weight_map: Record<string, string> }) => void): string {
    const src = join(fixtures, "tiny-qwen3-sharded");
    const dir = mkdtempSync(join(tmp, "ck-"));
    for (const f of readdirSync(src).filter((f) => f.endsWith(".safetensors"))) copyFileSync(join(src, f), join(dir, f));
    const index = JSON.parse(readFileSync(join(src, "model.safetensors.index.json"), "utf8"));
    mutate(index);
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    return dir;
  }

  test("index validation: missing shard, tensor absent from its shard, bad file name", () => {
    const d1 = shardedCopy((ix) => (ix.weight_map["model.norm.weight"] = "model-00003-of-00003.safetensors"));
    expectError(() => Checkpoint.open(d1), "model-00003-of-00003.safetensors", "does not exist", "model.norm.weight");
    const d2 = shardedCopy((ix) => (ix.weight_map["model.norm.weight"] = "model-00001-of-00002.safetensors"));
    expectError(() => Checkpoint.open(d2), "\"model.norm.weight\"", "does not contain it");
    const d3 = shardedCopy((ix) => (ix.weight_map["model.norm.weight"] = "../x.safetensors"));
    expectError(() => Checkpoint.open(d3), "model.norm.weight", "plain file name");
  });

  test("fallback to every *.safetensors; duplicates and empty dirs are errors", () => {
    const dir = mkdtempSync(join(tmp, "glob-"));
    writeSafetensors(join(dir, "b.safetensors"), [{ name: "y", dtype: "U8", shape: [1], data: bytes(1) }]);
    writeSafetensors(join(dir, "a.safetensors"), [{ name: "x", dtype: "U8", shape: [2], data: bytes(2) }]);
    const ck = Checkpoint.open(dir);
    expect(ck.kind).toBe("glob");
    expect(ck.names().sort()).toEqual(["x", "y"]);
    expect(ck.get("y").file).toBe(join(dir, "b.safetensors"));
    expectError(() => ck.get("z"), "\"z\"", dir);

    writeSafetensors(join(dir, "c.safetensors"), [{ name: "x", dtype: "U8", shape: [1], data: bytes(1) }]);
    expectError(() => Checkpoint.open(dir), "\"x\"", "a.safetensors", "c.safetensors");

    const empty = mkdtempSync(join(tmp, "empty-"));
    expectError(() => Checkpoint.open(empty), empty, "no *.safetensors");
    expectError(() => Checkpoint.open(join(tmp, "missing-dir")), "missing-dir", "does not exist");
  });
});

describe("bf16 conversion", () => {
  test("F32 → bf16: round to nearest even, NaN, infinities, subnormals, signed zero", () => {
    const cases: [number, number][] = [
      [0x3f800000, 0x3f80], // 1.0
      [0x3f808000, 0x3f80], // tie, even stays
      [0x3f818000, 0x3f82], // tie, odd rounds up
      [0x3f808001, 0x3f81], // just above the tie
      [0x3f807fff, 0x3f80], // just below the tie
      [0xbf818000, 0xbf82], // negative tie
      [0x7f7fffff, 0x7f80], // max float rounds to infinity
      [0x7f800000, 0x7f80], // +inf
      [0xff800000, 0xff80], // -inf
      [0x7fc00000, 0x7fc0], // quiet NaN
      [0x7f800001, 0x7fc0], // NaN whose payload is in the low bits stays NaN
      [0xffffffff, 0xffff], // negative NaN
      [0x80000000, 0x8000], // -0
      [0x00000000, 0x0000], // +0
      [0x00010000, 0x0001], // smallest bf16 subnormal
      [0x00008000, 0x0000], // subnormal tie → even (0)
      [0x00018000, 0x0002], // subnormal tie → even (2)
      [0x00000001, 0x0000], // tiny subnormal
      [0x007fffff, 0x0080], // largest subnormal rounds up to the smallest normal
    ];
    const input = u32(...cases.map((c) => c[0]));
    expect([...toBf16(view("F32", input))]).toEqual(cases.map((c) => c[1]));
    // unaligned source: same result through the copy path
    const shifted = new Uint8Array(input.length + 1).subarray(1);
    shifted.set(input);
    expect([...toBf16(view("F32", shifted))]).toEqual(cases.map((c) => c[1]));
  });

  test("F16 → bf16: rounding, subnormals, NaN, infinities, signed zero", () => {
    const cases: [number, number][] = [
      [0x3c00, 0x3f80], // 1.0
      [0x3c01, 0x3f80], // 1 + 2^-10 rounds down
      [0x3c04, 0x3f80], // 1 + 2^-8: tie, even stays
      [0x3c0c, 0x3f82], // 1 + 3·2^-8: tie, odd rounds up
      [0xbc0c, 0xbf82],
      [0x7bff, 0x4780], // 65504 rounds up to 65536
      [0x0001, 0x3380], // smallest f16 subnormal 2^-24
      [0x03ff, 0x3880], // largest f16 subnormal rounds up to 2^-14
      [0x8000, 0x8000], // -0
      [0x7c00, 0x7f80], // +inf
      [0xfc00, 0xff80], // -inf
      [0x7e00, 0x7fc0], // NaN
      [0x7c01, 0x7fc0], // NaN with a low payload stays NaN
    ];
    expect([...toBf16(view("F16", u16(...cases.map((c) => c[0]))))]).toEqual(cases.map((c) => c[1]));
  });

  test("F16 → bf16 agrees with Float16Array on all 65536 inputs", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const got = toBf16(view("F16", new Uint8Array(all.buffer)));
    const values = new Float16Array(all.buffer);
    for (let i = 0; i < 65536; i++) {
      const want = f32ToBf16Bits(values[i]);
      if (Number.isNaN(values[i])) expect(Number.isNaN(bf16BitsToF32(got[i]))).toBe(true);
      else if (got[i] !== want) expect(`${i}:${got[i]}`).toBe(`${i}:${want}`);
    }
  });

  test("BF16 passes through as a view when aligned and as a copy otherwise", () => {
    const data = u16(0x3f80, 0xc000, 0x7fc0);
    const aligned = toBf16(view("BF16", data));
    expect(aligned.buffer).toBe(data.buffer);
    expect([...aligned]).toEqual([0x3f80, 0xc000, 0x7fc0]);
    const odd = new Uint8Array(7).subarray(1);
    odd.set(data);
    expect([...toBf16(view("BF16", odd))]).toEqual([0x3f80, 0xc000, 0x7fc0]);
    expectError(() => toBf16({ name: "ids", file: "f.safetensors", dtype: "I32", shape: [1], data: bytes(4) }), "\"ids\"", "I32");
  });

  test("helpers: every non-NaN bf16 survives bf16 → f32 → bf16", () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(bf16BitsToF32(0x3fc0)).toBe(1.5);
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
    for (let b = 0; b < 65536; b++) {
      const x = bf16BitsToF32(b);
      if (!Number.isNaN(x) && f32ToBf16Bits(x) !== b) expect(b).toBe(-1);
    }
  });

  test("fixture f16 encoder agrees with Float16Array", () => {
    const probe = new Float16Array(1);
    const p16 = new Uint16Array(probe.buffer);
    const xs = [0, -0, 1, 65504, 65520, 1e5, -1e-8, 6e-8, 2.98e-8, 3e-8, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity];
    for (let i = 0; i < 2000; i++) xs.push(Math.sin(i * 12.9898) * 2 ** ((i % 40) - 28));
    for (const x of xs) {
      probe[0] = x;
      if (f32ToF16Bits(x) !== p16[0]) expect(`${x}:${f32ToF16Bits(x)}`).toBe(`${x}:${p16[0]}`);
    }
    expect(f32ToF16Bits(NaN) & 0x7fff).toBeGreaterThan(0x7c00);
  });

  test("F32 and F16 fixture checkpoints load to the bf16 weights", () => {
    const ref = Checkpoint.open(join(fixtures, "tiny-qwen3"));
    const f32 = Checkpoint.open(join(fixtures, "tiny-qwen3-f32"));
    const f16 = Checkpoint.open(join(fixtures, "tiny-qwen3-f16"));
    let inexact = 0;
    let total = 0;
    for (const name of ref.names()) {
      const want = toBf16(ref.get(name));
      expect(f32.get(name).dtype).toBe("F32");
      expect(f16.get(name).dtype).toBe("F16");
      expect(Buffer.from(toBf16(f32.get(name)).buffer).equals(Buffer.from(want.slice().buffer))).toBe(true);
      // f16 subnormals (|x| < 2^-14) keep fewer bits than bf16: compare with an absolute tolerance.
      const got = toBf16(f16.get(name));
      for (let i = 0; i < want.length; i++) {
        if (got[i] === want[i]) continue;
        inexact++;
        expect(Math.abs(bf16BitsToF32(got[i]) - bf16BitsToF32(want[i]))).toBeLessThanOrEqual(2 ** -24);
      }
      total += want.length;
    }
    expect(inexact / total).toBeLessThan(1e-4);
  });
});

describe("fixtures", () => {
  function digests(root: string): Record<string, string> {
    const out: Record<string, string> = {};
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else out[relative(root, p)] = new Bun.CryptoHasher("sha256").update(readFileSync(p)).digest("hex");
      }
    };
    walk(root);
    return out;
  }

  test("generation is deterministic and skipped when up to date", async () => {
    const a = await ensureFixtures(join(tmp, "fx-a"));
    const b = await ensureFixtures(join(tmp, "fx-b"));
    const da = digests(a);
    expect(Object.keys(da).length).toBe(6 * 4 + 5 + 3 + 1); // per dir: configs + tokenizer; weights; stamp
    expect(digests(b)).toEqual(da);
    expect(digests(fixtures)).toEqual(da);

    // Up to date: nothing is touched. One model missing: it is rewritten, unchanged files are not.
    const mtime = (root: string) => statSync(join(root, "tiny-llama", "model.safetensors")).mtimeMs;
    const [beforeA, beforeB] = [mtime(a), mtime(b)];
    rmSync(join(b, "tiny-qwen2"), { recursive: true });
    await ensureFixtures(a);
    await ensureFixtures(b);
    expect(mtime(a)).toBe(beforeA);
    expect(mtime(b)).toBe(beforeB);
    expect(digests(b)).toEqual(da);
    rmSync(a, { recursive: true });
    rmSync(b, { recursive: true });
  }, 60_000);

  test("fixture layout", () => {
    for (const m of ["tiny-qwen3", "tiny-llama", "tiny-qwen2"]) {
      const ck = Checkpoint.open(join(fixtures, m));
      for (const n of ck.names()) expect(ck.get(n).dtype).toBe("BF16");
      expect(ck.get("model.embed_tokens.weight").shape).toEqual([151936, 64]);
      expect(ck.has("lm_head.weight")).toBe(m !== "tiny-qwen3");
      expect(ck.has("model.layers.1.self_attn.q_norm.weight")).toBe(m === "tiny-qwen3");
      expect(ck.has("model.layers.1.self_attn.k_proj.bias")).toBe(m === "tiny-qwen2");
    }
    const q3 = Checkpoint.open(join(fixtures, "tiny-qwen3"));
    expect(q3.get("model.layers.0.self_attn.q_proj.weight").shape).toEqual([128, 64]);
    expect(q3.get("model.layers.0.self_attn.k_norm.weight").shape).toEqual([32]);
    const ll = Checkpoint.open(join(fixtures, "tiny-llama"));
    expect(ll.get("model.layers.1.self_attn.k_proj.weight").shape).toEqual([16, 64]);
    expect(ll.get("model.layers.1.mlp.down_proj.weight").shape).toEqual([64, 160]);
  });
});
