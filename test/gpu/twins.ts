// Buffers allocated twice, once on the CUDA backend and once on the CPU backend, holding the same inputs,
// so one op can run on both sides and the outputs be compared. Freed after each test.
import { afterEach } from "bun:test";
import type { Backend, DevicePtr } from "../../src/backend/backend.ts";
import type { NativeOps } from "../../src/backend/native_ops.ts";
import { poison } from "./gpu.ts";

export type Side = "gpu" | "cpu";
/** One buffer on both backends. */
export type Twin = Record<Side, DevicePtr>;
export const SIDES: Side[] = ["gpu", "cpu"];

/** Call inside a describe body: registers the afterEach that frees what the tests allocated. */
export function twinBuffers(gpu: Backend, cpu: Backend) {
  const backends: Record<Side, Backend> = { gpu, cpu };
  const owned: [Backend, DevicePtr][] = [];
  afterEach(() => {
    for (const [be, p] of owned.splice(0)) be.free(p);
  });
  /** Freed after the test like the twins (for buffers of one side only). */
  const own = (be: Backend, bytes: number): DevicePtr => {
    const p = be.alloc(Math.max(bytes, 16));
    owned.push([be, p]);
    return p;
  };
  const alloc = (bytes: number): Twin => ({ gpu: own(gpu, bytes), cpu: own(cpu, bytes) });
  /** The same host data on both sides. */
  const put = (data: ArrayBufferView): Twin => {
    const twin = alloc(data.byteLength);
    for (const s of SIDES) backends[s].upload(twin[s], data);
    return twin;
  };
  /** An output buffer filled with 0xFF on both sides, so unwritten elements show. */
  const out = (bytes: number): Twin => {
    const twin = alloc(bytes);
    for (const s of SIDES) poison(backends[s], twin[s], Math.max(bytes, 16));
    return twin;
  };
  const run = (call: (ops: NativeOps, s: Side) => void) => {
    for (const s of SIDES) call(backends[s].ops, s);
  };
  /** [gpu, cpu] contents of a twin. */
  const read = <T extends ArrayBufferView>(make: (n: number) => T, twin: Twin, n: number) =>
    SIDES.map((s) => {
      const host = make(n);
      backends[s].download(host, twin[s]);
      return host;
    }) as [T, T];
  return { backends, own, alloc, put, out, run, read };
}
