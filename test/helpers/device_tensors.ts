// Random bf16 tensors on a backend, and reading them back, for op tests.
import type { Backend, DevicePtr } from "../../src/backend/backend.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../src/model/safetensors.ts";
import { rng } from "./rng.ts";

/** bf16-representable values, uniform in [-scale, scale), as f32 (host copy) and uploaded bits. */
export function randomBf16(backend: Backend, n: number, seed: number, scale = 1, offset = 0): { ptr: DevicePtr; host: Float32Array } {
  const r = rng(seed);
  const bits = new Uint16Array(n);
  const host = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    bits[i] = f32ToBf16Bits(offset + (2 * r() - 1) * scale);
    host[i] = bf16BitsToF32(bits[i]);
  }
  const ptr = backend.alloc(n * 2);
  backend.upload(ptr, bits);
  return { ptr, host };
}

export function readBf16(backend: Backend, p: DevicePtr, n: number): Float32Array {
  const bits = new Uint16Array(n);
  backend.download(bits, p);
  return Float32Array.from(bits, bf16BitsToF32);
}

export function upload(backend: Backend, data: Int32Array | Float32Array): DevicePtr {
  const p = backend.alloc(data.byteLength);
  backend.upload(p, data);
  return p;
}

/** Largest |a − b| / (atol + rtol·|b|); ≤ 1 means within tolerance. */
export function worstError(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (atol + rtol * Math.abs(b[i])));
  return worst;
}
