// bf16 GEMMs through cuBLASLt (bun:ffi; the CPU development machines have no cuBLAS headers, so the few
// enum values used are spelled out here). Row-major y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias) is computed as the
// column-major D[N, M] = Aᵀ·B with A = w (K×N column-major, ld K) and B = x (K×M column-major, ld = x stride).
// Descriptors and the heuristic's algorithm are made once per shape and cached.
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";

const { ptr, i32, u64, i64 } = FFIType;

const SYMBOLS = {
  cublasLtCreate: { args: [ptr], returns: i32 },
  cublasLtDestroy: { args: [ptr], returns: i32 },
  cublasLtMatmulDescCreate: { args: [ptr, i32, i32], returns: i32 },
  cublasLtMatmulDescDestroy: { args: [ptr], returns: i32 },
  cublasLtMatmulDescSetAttribute: { args: [ptr, i32, ptr, u64], returns: i32 },
  cublasLtMatrixLayoutCreate: { args: [ptr, i32, u64, u64, i64], returns: i32 },
  cublasLtMatrixLayoutDestroy: { args: [ptr], returns: i32 },
  cublasLtMatmulPreferenceCreate: { args: [ptr], returns: i32 },
  cublasLtMatmulPreferenceDestroy: { args: [ptr], returns: i32 },
  cublasLtMatmulPreferenceSetAttribute: { args: [ptr, i32, ptr, u64], returns: i32 },
  cublasLtMatmulAlgoGetHeuristic: { args: [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i32, ptr, ptr], returns: i32 },
  cublasLtMatmul: { args: [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, u64, ptr], returns: i32 },
} as const;

// cublasLt.h / library_types.h values
const CUDA_R_32F = 0, CUDA_R_16BF = 14, CUBLAS_COMPUTE_32F = 68, CUBLAS_OP_T = 1;
const DESC_TRANSA = 3, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8, DESC_BIAS_DATA_TYPE = 26;
const EPILOGUE_BIAS = 4, PREF_MAX_WORKSPACE_BYTES = 1;
const HEURISTIC_RESULT_BYTES = 96; // { algo: uint64[8]; size_t workspaceSize; int state; float waves; int reserved[4] }

export const CUBLASLT_WORKSPACE_BYTES = 32 << 20;

interface Plan {
  desc: number;
  layouts: number[]; // A, B, D
  heuristic: Uint8Array; // the chosen algorithm's record (its first 64 bytes are the algo)
  bias: number; // the bias pointer the descriptor holds
}

const P = (p: number) => p as unknown as Pointer;

function libraryPath(): string {
  const home = process.env.CUDA_HOME ?? process.env.CUDA_PATH ?? "/usr/local/cuda";
  const candidate = join(home, "lib64/libcublasLt.so.13");
  return existsSync(candidate) ? candidate : "libcublasLt.so.13";
}

export class CublasLt {
  private readonly lt = dlopen(libraryPath(), SYMBOLS).symbols;
  private readonly handle: number;
  private readonly preference: number;
  private readonly plans = new Map<string, Plan>();
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);

  constructor(private readonly workspace: number) {
    this.handle = this.created((s) => this.lt.cublasLtCreate(s), "cublasLtCreate");
    this.preference = this.created((s) => this.lt.cublasLtMatmulPreferenceCreate(s), "cublasLtMatmulPreferenceCreate");
    const size = new BigUint64Array([BigInt(CUBLASLT_WORKSPACE_BYTES)]);
    this.check(this.lt.cublasLtMatmulPreferenceSetAttribute(P(this.preference), PREF_MAX_WORKSPACE_BYTES, size, 8), "preference");
  }

  private check(status: number, what: string): void {
    if (status !== 0) throw new Error(`cuBLASLt ${what} failed with status ${status}`);
  }

  private created(fn: (slot: BigUint64Array) => number, what: string): number {
    const slot = new BigUint64Array(1);
    this.check(fn(slot), what);
    return Number(slot[0]);
  }

  private layout(type: number, rows: number, cols: number, ld: number): number {
    return this.created((s) => this.lt.cublasLtMatrixLayoutCreate(s, type, rows, cols, ld), "layout");
  }

  private plan(m: number, n: number, k: number, xStride: number, bias: number, outF32: boolean): Plan {
    const key = `${m},${n},${k},${xStride},${bias},${outF32}`;
    const cached = this.plans.get(key);
    if (cached) return cached;
    const desc = this.created((s) => this.lt.cublasLtMatmulDescCreate(s, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    this.check(this.lt.cublasLtMatmulDescSetAttribute(P(desc), DESC_TRANSA, new Int32Array([CUBLAS_OP_T]), 4), "transa");
    if (bias) {
      this.check(this.lt.cublasLtMatmulDescSetAttribute(P(desc), DESC_EPILOGUE, new Uint32Array([EPILOGUE_BIAS]), 4), "epilogue");
      this.check(this.lt.cublasLtMatmulDescSetAttribute(P(desc), DESC_BIAS_POINTER, new BigUint64Array([BigInt(bias)]), 8), "bias");
      this.check(this.lt.cublasLtMatmulDescSetAttribute(P(desc), DESC_BIAS_DATA_TYPE, new Int32Array([CUDA_R_16BF]), 4), "bias type");
    }
    const a = this.layout(CUDA_R_16BF, k, n, k);
    const b = this.layout(CUDA_R_16BF, k, m, xStride);
    const d = this.layout(outF32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n);
    const heuristic = new Uint8Array(HEURISTIC_RESULT_BYTES);
    const found = new Int32Array(1);
    this.check(this.lt.cublasLtMatmulAlgoGetHeuristic(P(this.handle), P(desc), P(a), P(b), P(d), P(d), P(this.preference), 1,
      heuristic, found), "heuristic");
    if (found[0] < 1) throw new Error(`cuBLASLt has no algorithm for a bf16 GEMM of M=${m} N=${n} K=${k}`);
    const plan = { desc, layouts: [a, b, d], heuristic, bias };
    this.plans.set(key, plan);
    return plan;
  }

  /** y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]) on `stream`; y is fp32 when outF32, else bf16. */
  gemm(y: number, x: number, w: number, bias: number, m: number, n: number, k: number, xStride: number, outF32: boolean,
    stream: number): void {
    if (m === 0) return;
    const p = this.plan(m, n, k, xStride, bias, outF32);
    const [a, b, d] = p.layouts;
    this.check(this.lt.cublasLtMatmul(P(this.handle), P(p.desc), this.one, P(w), P(a), P(x), P(b), this.zero, P(y), P(d), P(y),
      P(d), p.heuristic, P(this.workspace), CUBLASLT_WORKSPACE_BYTES, P(stream)), `matmul M=${m} N=${n} K=${k}`);
  }

  /** Shapes planned so far (the heuristic cache). */
  get planCount(): number {
    return this.plans.size;
  }

  close(): void {
    for (const p of this.plans.values()) {
      this.lt.cublasLtMatmulDescDestroy(P(p.desc));
      for (const l of p.layouts) this.lt.cublasLtMatrixLayoutDestroy(P(l));
    }
    this.plans.clear();
    this.lt.cublasLtMatmulPreferenceDestroy(P(this.preference));
    this.lt.cublasLtDestroy(P(this.handle));
  }
}
