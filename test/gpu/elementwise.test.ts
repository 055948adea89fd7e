// The CUDA element-wise, norm, RoPE, gather, fused q/k-norm+RoPE+store and GEMM kernels against the CPU library on
// the same random inputs: bit-exact where the math is identical, else within about one bf16 ulp.
import { expect, test } from "bun:test";
import type { Backend, DevicePtr } from "../../src/backend/backend.ts";
import type { NativeOps } from "../../src/backend/native_ops.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../src/model/safetensors.ts";
import { rng } from "../helpers/rng.ts";
import { cudaBackend, describeGpu, poison } from "./gpu.ts";
import { type Side, type Twin, twinBuffers } from "./twins.ts";

const EPS = 1e-6;
// With MINISGL_GPU_TESTS_ON_CPU=1 both sides are the CPU library and there is no CUDA backend to take the
// msgl_gemm kernel from: its tests are skipped there (the argument checks use the CPU's msgl_gemm instead).
const cpuOnBothSides = process.env.MINISGL_GPU_TESTS_ON_CPU === "1";
const GPU_ONLY = cpuOnBothSides ? " [skipped: needs a real GPU, MINISGL_GPU_TESTS_ON_CPU=1]" : "";

function bf16Bits(n: number, seed: number, scale = 1, offset = 0): Uint16Array {
  const r = rng(seed);
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) bits[i] = f32ToBf16Bits(offset + (2 * r() - 1) * scale);
  return bits;
}

function ints(n: number, seed: number, lo: number, hi: number): Int32Array {
  const r = rng(seed);
  return Int32Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
}

/** n distinct values from [0, range), in random order (KV slots, page-table rows). */
function distinct(n: number, seed: number, range: number): Int32Array {
  const r = rng(seed);
  const all = Int32Array.from({ length: range }, (_, i) => i);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(r() * (range - i));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, n);
}

/** cos for the first rot/2 columns, sin for the rest, per position (HF's default inverse frequencies). */
function cosSin(maxPos: number, rot: number): Float32Array {
  const cs = new Float32Array(maxPos * rot);
  for (let p = 0; p < maxPos; p++) for (let i = 0; i < rot / 2; i++) {
    const a = p * 1e6 ** (-2 * i / rot);
    cs[p * rot + i] = Math.cos(a);
    cs[p * rot + rot / 2 + i] = Math.sin(a);
  }
  return cs;
}

/** "" when equal, else where the first difference is. */
function sameBits(gpu: ArrayLike<number>, cpu: ArrayLike<number>): string {
  if (gpu.length !== cpu.length) return `length ${gpu.length} ≠ ${cpu.length}`;
  for (let i = 0; i < gpu.length; i++) if (gpu[i] !== cpu[i]) return `first difference at ${i}: gpu ${gpu[i]}, cpu ${cpu[i]}`;
  return "";
}

/** "" when every |gpu − cpu| ≤ atol + rtol·|cpu|, else the worst element. NaN on one side only fails (poisoned
 * elements that neither side wrote are NaN on both). */
function close(gpu: ArrayLike<number>, cpu: ArrayLike<number>, atol: number, rtol: number): string {
  let worst = 0, at = -1;
  for (let i = 0; i < cpu.length; i++) {
    if (Number.isNaN(gpu[i]) && Number.isNaN(cpu[i])) continue;
    const e = Math.abs(gpu[i] - cpu[i]) / (atol + rtol * Math.abs(cpu[i]));
    if (!(e <= worst)) [worst, at] = [Number.isNaN(e) ? Infinity : e, i];
  }
  return worst <= 1 ? "" : `worst at ${at}: gpu ${gpu[at]}, cpu ${cpu[at]} (${worst.toFixed(2)}× the tolerance)`;
}
const closeBf16 = (gpu: ArrayLike<number>, cpu: ArrayLike<number>) => close(gpu, cpu, 1e-2, 8e-3);

describeGpu("CUDA element-wise kernels match the CPU library", (gpu: Backend, cpu: Backend) => {
  const { own, put, out, run, read } = twinBuffers(gpu, cpu);
  const bits = (twin: Twin, n: number) => read((k) => new Uint16Array(k), twin, n);
  const gpuOut = (bytes: number): DevicePtr => {
    const p = own(gpu, bytes);
    poison(gpu, p, bytes);
    return p;
  };
  const gpuBits = (p: DevicePtr, n: number) => {
    const host = new Uint16Array(n);
    gpu.download(host, p);
    return host;
  };
  const values = (twin: Twin, n: number) => bits(twin, n).map((b) => Float32Array.from(b, bf16BitsToF32)) as [Float32Array, Float32Array];

  for (const [tokens, hidden, start, vocab] of [[5, 12, 20, 10], [37, 1024, 0, 4096], [64, 128, 0, 151936], [9, 4096, 1000, 2000]]) {
    test(`embedding: ${tokens} tokens, hidden ${hidden}, vocab slice [${start}, ${start + vocab})`, () => {
      const table = put(bf16Bits(vocab * hidden, hidden));
      const ids = ints(tokens, tokens, start - 5, start + vocab + 5);
      ids[0] = start, ids[tokens - 1] = start + vocab - 1;
      const o = out(tokens * hidden * 2), idp = put(ids);
      run((ops, s) => ops.embedding(o[s], table[s], idp[s], tokens, hidden, start, vocab));
      expect(sameBits(...bits(o, tokens * hidden))).toBe("");
    }, 30_000);
  }

  for (const [rows, dim] of [[3, 17], [5, 96], [7, 1024], [16, 4096], [2, 8192], [3, 4100]]) {
    test(`rmsnorm and add_rmsnorm: ${rows}×${dim}`, () => {
      const x = put(bf16Bits(rows * dim, dim, 3)), w = put(bf16Bits(dim, dim + 1, 0.5, 1));
      const res = put(bf16Bits(rows * dim, dim + 2, 2)), o = out(rows * dim * 2);
      run((ops, s) => ops.rmsnorm(o[s], x[s], w[s], rows, dim, EPS));
      expect(closeBf16(...values(o, rows * dim))).toBe("");
      run((ops, s) => ops.addRmsnorm(o[s], res[s], x[s], w[s], rows, dim, EPS));
      expect(sameBits(...bits(res, rows * dim))).toBe(""); // one bf16 addition: exact
      expect(closeBf16(...values(o, rows * dim))).toBe("");
      run((ops, s) => ops.rmsnorm(x[s], x[s], w[s], rows, dim, EPS)); // in place
      expect(closeBf16(...values(x, rows * dim))).toBe("");
    });
  }

  // [tokens, heads, head_dim, stride, offset of the section in each row]
  for (const [tokens, heads, hd, stride, at] of [[3, 2, 16, 80, 8], [5, 16, 128, 4096, 0], [4, 8, 128, 4096, 2048], [3, 3, 20, 70, 6]]) {
    test(`head_rmsnorm: ${tokens} tokens × ${heads} heads × ${hd}, stride ${stride}`, () => {
      const x = put(bf16Bits(tokens * stride, hd, 2)), w = put(bf16Bits(hd, hd + 1, 0.5, 1));
      run((ops, s) => ops.headRmsnorm(x[s] + at * 2, w[s], tokens, heads, hd, stride, EPS));
      expect(closeBf16(...values(x, tokens * stride))).toBe("");
    });
  }

  // [tokens, q heads, k heads, head_dim, rotary_dim]; q and k are sections of one merged qkv buffer
  for (const [tokens, qh, kh, hd, rot] of [[4, 4, 2, 32, 16], [7, 16, 8, 128, 128], [5, 16, 8, 128, 64], [3, 2, 1, 24, 8], [300, 8, 2, 64, 64]]) {
    test(`rope: ${tokens} tokens, ${qh}/${kh} heads × ${hd}, rotary ${rot}`, () => {
      const stride = (qh + 2 * kh) * hd, maxPos = 4096;
      const qkv = put(bf16Bits(tokens * stride, tokens + hd, 2));
      const pos = put(ints(tokens, rot, 0, maxPos)), cs = put(cosSin(maxPos, rot));
      run((ops, s) => ops.rope(qkv[s], qkv[s] + qh * hd * 2, pos[s], cs[s], tokens, qh, kh, hd, rot, stride, stride));
      expect(closeBf16(...values(qkv, tokens * stride))).toBe("");
    });
  }

  // [tokens, q heads, kv heads, head_dim, rotary_dim, q/k norm weights]
  for (const [tokens, qh, kvh, hd, rot, norms] of [[5, 16, 8, 128, 128, true], [3, 4, 2, 64, 32, false], [4, 2, 1, 24, 8, true],
    [33, 32, 8, 128, 128, true], [2, 3, 1, 16, 16, false]] as const) {
    test(`qk_norm_rope_store: ${tokens} tokens, ${qh}/${kvh} heads × ${hd}, rotary ${rot}, norms ${norms}`, () => {
      const stride = (qh + 2 * kvh) * hd, kvDim = kvh * hd, maxPos = 2048, slotsTotal = 2 * tokens + 3;
      const src = bf16Bits(tokens * stride, tokens * hd, 2);
      const qkv = put(src), pos = put(ints(tokens, hd, 0, maxPos)), cs = put(cosSin(maxPos, rot));
      const qn = put(bf16Bits(hd, 1, 0.5, 1)), kn = put(bf16Bits(hd, 2, 0.5, 1)), slots = put(distinct(tokens, 3, slotsTotal));
      const kc = out(slotsTotal * kvDim * 2), vc = out(slotsTotal * kvDim * 2);
      const norm = (t: Twin, s: Side) => (norms ? t[s] : 0);
      run((ops, s) => ops.qkNormRopeStore(qkv[s], norm(qn, s), norm(kn, s), pos[s], cs[s], kc[s], vc[s], slots[s], tokens, qh, kvh, hd, rot, EPS));
      expect(closeBf16(...values(qkv, tokens * stride))).toBe("");
      expect(closeBf16(...values(kc, slotsTotal * kvDim))).toBe("");
      expect(sameBits(...bits(vc, slotsTotal * kvDim))).toBe("");

      // The fused kernel is bit-identical to head_rmsnorm → rope → store_kv on the GPU.
      const g = gpu.ops, q2 = gpuOut(src.byteLength), kc2 = gpuOut(slotsTotal * kvDim * 2), vc2 = gpuOut(slotsTotal * kvDim * 2);
      const k2 = q2 + qh * hd * 2, v2 = k2 + kvh * hd * 2;
      gpu.upload(q2, src);
      if (norms) {
        g.headRmsnorm(q2, qn.gpu, tokens, qh, hd, stride, EPS);
        g.headRmsnorm(k2, kn.gpu, tokens, kvh, hd, stride, EPS);
      }
      g.rope(q2, k2, pos.gpu, cs.gpu, tokens, qh, kvh, hd, rot, stride, stride);
      g.storeKv(kc2, vc2, k2, v2, slots.gpu, tokens, kvDim, stride, stride);
      expect(sameBits(bits(qkv, tokens * stride)[0], gpuBits(q2, tokens * stride))).toBe("");
      expect(sameBits(bits(kc, slotsTotal * kvDim)[0], gpuBits(kc2, slotsTotal * kvDim))).toBe("");
    });
  }

  for (const [rows, inter] of [[3, 40], [5, 13], [16, 3072], [2, 25600]]) {
    test(`silu_mul: ${rows}×${inter}`, () => {
      const gu = put(bf16Bits(rows * 2 * inter, inter, 4)), o = out(rows * inter * 2);
      run((ops, s) => ops.siluMul(o[s], gu[s], rows, inter));
      expect(closeBf16(...values(o, rows * inter))).toBe("");
    });
  }

  // [M, inter, K, x_stride]: decode shapes (the GEMV), a partial last round of loads, and 3 rows (two launches).
  for (const [m, inter, k, xStride] of [[1, 12288, 4096, 4096], [2, 3072, 1024, 1032], [1, 40, 8200, 8200], [3, 130, 64, 72]]) {
    test(`gemm_silu_mul: ${m}×${k} · gate_up [${2 * inter}×${k}]ᵀ, x_stride ${xStride}`, () => {
      const x = put(bf16Bits(m * xStride, k)), w = put(bf16Bits(2 * inter * k, inter, 1 / Math.sqrt(k))), o = out(m * inter * 2);
      run((ops, s) => ops.gemmSiluMul(o[s], x[s], w[s], m, inter, k, xStride));
      // g and u may each round to a neighbouring bf16 on one side: up to about three bf16 ulps apart.
      expect(close(...values(o, m * inter), 1e-4 * Math.sqrt(k), 1.6e-2)).toBe("");
      if (cpuOnBothSides) return;
      // On the GPU: the GEMV (msgl_gemm, M ≤ 2 rows at a time) then silu_mul, bit for bit.
      const gateUp = gpuOut(m * 2 * inter * 2), separate = gpuOut(m * inter * 2);
      for (let r = 0; r < m; r += 2) {
        const rows = Math.min(2, m - r);
        kernelOps().gemm(gateUp + r * 2 * inter * 2, x.gpu + r * xStride * 2, w.gpu, 0, rows, 2 * inter, k, xStride, false);
      }
      gpu.ops.siluMul(separate, gateUp, m, inter);
      expect(sameBits(bits(o, m * inter)[0], gpuBits(separate, m * inter))).toBe("");
    });
  }

  // [tokens, kv_dim, stride of the k / v rows]
  for (const [tokens, kvDim, stride] of [[3, 8, 24], [9, 1024, 4096], [5, 12, 37], [512, 512, 2048]]) {
    test(`store_kv and gather_rows: ${tokens} tokens, kv_dim ${kvDim}, stride ${stride}`, () => {
      const slotsTotal = tokens * 2 + 1;
      const src = put(bf16Bits(tokens * stride + kvDim, kvDim)), slots = put(distinct(tokens, tokens, slotsTotal));
      const kc = out(slotsTotal * kvDim * 2), vc = out(slotsTotal * kvDim * 2);
      run((ops, s) => ops.storeKv(kc[s], vc[s], src[s], src[s] + kvDim * 2, slots[s], tokens, kvDim, stride, stride));
      expect(sameBits(...bits(kc, slotsTotal * kvDim))).toBe("");
      expect(sameBits(...bits(vc, slotsTotal * kvDim))).toBe("");
      const n = tokens + 2, idx = put(ints(n, 7, 0, slotsTotal)), o = out(n * kvDim * 2);
      run((ops, s) => ops.gatherRows(o[s], kc[s], idx[s], n, kvDim));
      expect(sameBits(...bits(o, n * kvDim))).toBe("");
    });
  }

  test("fill_random gives the CPU's bits (aligned, odd sizes and an unaligned start)", () => {
    for (const [n, seed, at] of [[1, 3, 0], [7, 4, 0], [1_000_003, 5, 0], [4099, 6, 1], [65_536, 2 ** 40 + 7, 3]]) {
      const o = out((n + at) * 2);
      run((ops, s) => ops.fillRandom(o[s] + at * 2, n, seed, 0.25, 0.02));
      expect(sameBits(...bits(o, n + at))).toBe(""); // the poisoned elements before the start stay equal too
    }
  });

  test("scatter_tokens and gather_tokens", () => {
    const poolRows = 300, n = 257;
    const pool = put(ints(poolRows, 1, 0, 151936)), rows = put(distinct(n, 2, poolRows)), tokens = put(ints(n, 3, 0, 151936));
    run((ops, s) => ops.scatterTokens(pool[s], rows[s], tokens[s], n));
    expect(sameBits(...read((k) => new Int32Array(k), pool, poolRows))).toBe("");
    const o = out(n * 4), rows2 = put(ints(n, 4, 0, poolRows));
    run((ops, s) => ops.gatherTokens(o[s], pool[s], rows2[s], n));
    expect(sameBits(...read((k) => new Int32Array(k), o, n))).toBe("");
  });

  // msgl_gemm itself (gpu.ops.gemm goes to cuBLASLt).
  const kernelOps = (): NativeOps => (cpuOnBothSides ? gpu.ops : cudaBackend().kernelOps);

  test("argument checks fail with the CPU's messages", () => {
    for (const [ops, gemmOps] of [[gpu.ops, kernelOps()], [cpu.ops, cpu.ops]]) {
      expect(() => ops.rmsnorm(0, 0, 0, 1, 0, EPS)).toThrow("rmsnorm: bad shape");
      expect(() => ops.headRmsnorm(0, 0, 1, 2, 64, 100, EPS)).toThrow("head_rmsnorm: bad shape");
      expect(() => ops.rope(0, 0, 0, 0, 1, 1, 1, 64, 65, 64, 64)).toThrow("rope: bad shape");
      expect(() => ops.qkNormRopeStore(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 64, 63, EPS)).toThrow("rope: bad shape");
      expect(() => gemmOps.gemm(0, 0, 0, 0, 1, 8, 16, 8, false)).toThrow("gemm: bad shape");
      expect(() => ops.gemmSiluMul(0, 0, 0, 1, 0, 8, 8)).toThrow("gemm_silu_mul: bad shape");
      expect(() => ops.fillRandom(0, -1, 0, 0, 1)).toThrow("fill_random: negative size");
    }
  });

  // [M, N, K, x_stride, bias, fp32 out]. M ≤ 2 with K and x_stride multiples of 8 take the GEMV (K = 8200: a
  // partial last round of loads; N = 150000: many rows per warp); the other shapes the tiled kernel.
  for (const [m, n, k, xStride, bias, f32] of [[1, 4096, 4096, 4096, false, false], [7, 3000, 1000, 1000, true, true],
    [256, 1024, 2048, 2048, true, false], [1536, 1536, 256, 264, true, true], [19, 24, 96, 101, true, false],
    [7, 50, 33, 38, false, true], [100, 70, 200, 200, false, false], [2, 1000, 1024, 1032, true, true],
    [1, 77, 2048, 2048, false, false], [2, 130, 8200, 8208, true, true], [1, 150000, 64, 64, true, true],
    [1, 5, 8, 8, true, false], [2, 50, 33, 38, true, false], [4, 6144, 4096, 4096, true, false]] as const) {
    (cpuOnBothSides ? test.skip : test)(`gemm (msgl_gemm kernel): [${m}×${k}]·[${n}×${k}]ᵀ, x_stride ${xStride}, bias ${bias}, fp32 out ${f32}${GPU_ONLY}`, () => {
      const x = put(bf16Bits(m * xStride, k)), w = put(bf16Bits(n * k, n)), b = put(bf16Bits(n, 3));
      const y = out(m * n * 4);
      run((ops, s) => (s === "gpu" ? kernelOps() : ops).gemm(y[s], x[s], w[s], bias ? b[s] : 0, m, n, k, xStride, f32));
      // Inputs in [-1, 1): sums grow like sqrt(K); fp32 sums in another order differ far less than this.
      const atol = 1e-4 * Math.sqrt(k);
      if (f32) expect(close(...read((i) => new Float32Array(i), y, m * n), atol, 1e-5)).toBe("");
      else expect(close(...values(y, m * n), atol, 8e-3)).toBe("");
    }, 30_000);
  }
});
