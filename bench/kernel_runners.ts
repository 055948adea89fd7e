// Inputs for one kernel case on a backend (random bf16 activations and weights, random fp32 logits,
// contiguous slot-indexed KV) and the one op call that the case times, through Backend.ops.
import type { Backend, DevicePtr } from "../src/backend/backend.ts";
import { useAttentionKernels } from "../src/backend/attention_kernels.ts";
import type { KernelCase } from "./kernel_cases.ts";
import { PyRandom } from "./py_random.ts";

export interface PreparedCase {
  run(): void;
  free(): void;
}

const UPLOAD_PIECE = 4 << 20;

class Buffers {
  private readonly owned: DevicePtr[] = [];
  constructor(private readonly backend: Backend, private readonly seed: number) {}

  /** bf16 values uniform with unit variance (the deterministic fill of dummy weights). */
  bf16(elements: number, std = 1): DevicePtr {
    const p = this.alloc(elements * 2);
    this.backend.ops.fillRandom(p, elements, this.seed + this.owned.length, 0, std);
    return p;
  }

  /** In pieces: the CUDA backend stages uploads through a pinned ring of a few MiB. */
  upload(data: Int32Array | Float32Array | Uint32Array): DevicePtr {
    const p = this.alloc(data.byteLength);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let at = 0; at < bytes.length; at += UPLOAD_PIECE) this.backend.upload(p + at, bytes.subarray(at, at + UPLOAD_PIECE));
    return p;
  }

  alloc(bytes: number): DevicePtr {
    const p = this.backend.alloc(Math.max(bytes, 4));
    this.owned.push(p);
    return p;
  }

  free(): void {
    for (const p of this.owned) this.backend.free(p);
  }
}

/** Logits like a model's: N(0, 4²)-ish, from the seeded generator. */
function randomLogits(rows: number, vocab: number, seed: number): Float32Array {
  const random = new PyRandom(seed);
  const x = new Float32Array(rows * vocab);
  for (let i = 0; i < x.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - random.random())) * 4;
    const t = 2 * Math.PI * random.random();
    x[i] = r * Math.cos(t);
    if (i + 1 < x.length) x[i + 1] = r * Math.sin(t);
  }
  return x;
}

export function prepareCase(backend: Backend, c: KernelCase, seed = 0): PreparedCase {
  const ops = backend.ops;
  const buf = new Buffers(backend, seed);
  const s = c.shape;
  useAttentionKernels(backend, c.attention); // this thread's attention calls until the next case is prepared
  let run: () => void;
  switch (c.op) {
    case "rmsnorm": {
      const x = buf.bf16(s.rows * s.dim);
      const w = buf.bf16(s.dim);
      const out = buf.alloc(s.rows * s.dim * 2);
      run = () => ops.rmsnorm(out, x, w, s.rows, s.dim, 1e-6);
      break;
    }
    case "gemm": {
      const x = buf.bf16(s.m * s.k);
      const w = buf.bf16(s.n * s.k, 1 / Math.sqrt(s.k));
      const y = buf.alloc(s.m * s.n * (s.out_f32 ? 4 : 2));
      run = () => ops.gemm(y, x, w, 0, s.m, s.n, s.k, s.k, s.out_f32 === 1);
      break;
    }
    case "attention_decode": {
      const { batch, context, q_heads: qh, kv_heads: kvh, head_dim: d } = s;
      const q = buf.bf16(batch * qh * d);
      const k = buf.bf16(batch * context * kvh * d);
      const v = buf.bf16(batch * context * kvh * d);
      const pageTable = buf.upload(Int32Array.from({ length: batch * context }, (_, i) => i));
      const rows = buf.upload(Int32Array.from({ length: batch }, (_, r) => r));
      const kvLens = buf.upload(new Int32Array(batch).fill(context));
      const scratchBytes = ops.attentionDecodeWorkspace(batch, qh, d, context);
      const scratch = scratchBytes > 0 ? buf.alloc(scratchBytes) : 0;
      const out = buf.alloc(batch * qh * d * 2);
      run = () => ops.attentionDecode(out, q, k, v, pageTable, context, rows, kvLens, batch, qh, kvh, d, qh * d, 1 / Math.sqrt(d), scratch, scratchBytes);
      break;
    }
    case "attention_prefill": {
      const { seq, q_heads: qh, kv_heads: kvh, head_dim: d } = s;
      const q = buf.bf16(seq * qh * d);
      const k = buf.bf16(seq * kvh * d);
      const v = buf.bf16(seq * kvh * d);
      const pageTable = buf.upload(Int32Array.from({ length: seq }, (_, i) => i));
      const rows = buf.upload(Int32Array.of(0));
      const qoIndptr = buf.upload(Int32Array.of(0, seq));
      const kvLens = buf.upload(Int32Array.of(seq));
      const out = buf.alloc(seq * qh * d * 2);
      run = () => ops.attentionPrefill(out, q, k, v, pageTable, seq, rows, qoIndptr, kvLens, 1, seq, qh, kvh, d, qh * d, 1 / Math.sqrt(d));
      break;
    }
    case "argmax": {
      const logits = buf.upload(randomLogits(s.batch, s.vocab, seed));
      const out = buf.alloc(s.batch * 4);
      run = () => ops.argmax(out, logits, s.batch, s.vocab);
      break;
    }
    case "sample": {
      const n = s.batch;
      const logits = buf.upload(randomLogits(n, s.vocab, seed));
      const temperature = buf.upload(new Float32Array(n).fill(s.temperature));
      const topK = buf.upload(new Int32Array(n).fill(s.top_k));
      const topP = buf.upload(new Float32Array(n).fill(s.top_p));
      const minP = buf.upload(new Float32Array(n));
      const seeds = buf.upload(Uint32Array.from({ length: n }, (_, i) => i));
      const steps = buf.upload(new Int32Array(n));
      const out = buf.alloc(n * 4);
      run = () => ops.sample(out, logits, n, s.vocab, temperature, topK, topP, minP, seeds, steps);
      break;
    }
  }
  backend.synchronize();
  return { run, free: () => buf.free() };
}
