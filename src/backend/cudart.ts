// The few CUDA runtime functions the CUDA backend needs, through bun:ffi (libcudart.so.13 from the system).
// Handles and device pointers are plain numbers (addresses stay below 2^47).
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";

const { ptr, i32, u32, u64, cstring } = FFIType;

const SYMBOLS = {
  cudaGetErrorString: { args: [i32], returns: cstring },
  cudaGetDeviceCount: { args: [ptr], returns: i32 },
  cudaSetDevice: { args: [i32], returns: i32 },
  cudaGetDeviceProperties: { args: [ptr, i32], returns: i32 },
  cudaDeviceGetAttribute: { args: [ptr, i32, i32], returns: i32 },
  cudaMemGetInfo: { args: [ptr, ptr], returns: i32 },
  cudaMalloc: { args: [ptr, u64], returns: i32 },
  cudaFree: { args: [ptr], returns: i32 },
  cudaMallocHost: { args: [ptr, u64], returns: i32 },
  cudaFreeHost: { args: [ptr], returns: i32 },
  cudaMemcpyAsync: { args: [ptr, ptr, u64, i32, ptr], returns: i32 },
  cudaMemsetAsync: { args: [ptr, i32, u64, ptr], returns: i32 },
  cudaStreamCreateWithFlags: { args: [ptr, u32], returns: i32 },
  cudaStreamDestroy: { args: [ptr], returns: i32 },
  cudaStreamSynchronize: { args: [ptr], returns: i32 },
  cudaStreamWaitEvent: { args: [ptr, ptr, u32], returns: i32 },
  cudaEventCreateWithFlags: { args: [ptr, u32], returns: i32 },
  cudaEventDestroy: { args: [ptr], returns: i32 },
  cudaEventRecord: { args: [ptr, ptr], returns: i32 },
  cudaEventSynchronize: { args: [ptr], returns: i32 },
  cudaEventQuery: { args: [ptr], returns: i32 },
  cudaEventElapsedTime: { args: [ptr, ptr, ptr], returns: i32 },
  cudaStreamBeginCapture: { args: [ptr, i32], returns: i32 },
  cudaStreamEndCapture: { args: [ptr, ptr], returns: i32 },
  cudaGraphInstantiateWithFlags: { args: [ptr, ptr, u64], returns: i32 },
  cudaGraphLaunch: { args: [ptr, ptr], returns: i32 },
  cudaGraphExecDestroy: { args: [ptr], returns: i32 },
  cudaGraphDestroy: { args: [ptr], returns: i32 },
  cudaGraphGetEdges: { args: [ptr, ptr, ptr, ptr, ptr], returns: i32 },
} as const;

export const MEMCPY = { hostToDevice: 1, deviceToHost: 2, deviceToDevice: 3 } as const;
export const STREAM_NON_BLOCKING = 1;
export const EVENT_DISABLE_TIMING = 2;
export const CAPTURE_MODE_THREAD_LOCAL = 1;
const ERROR_NOT_READY = 600;
const ATTR_MULTIPROCESSOR_COUNT = 16;
const ATTR_COMPUTE_CAPABILITY_MAJOR = 75;

function libraryPath(): string {
  const home = process.env.CUDA_HOME ?? process.env.CUDA_PATH ?? "/usr/local/cuda";
  const candidate = join(home, "lib64/libcudart.so.13");
  return existsSync(candidate) ? candidate : "libcudart.so.13";
}

let lib: ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"] | null = null;

/** The CUDA runtime, or an Error saying why it cannot be loaded. */
export function cudart() {
  if (!lib) lib = dlopen(libraryPath(), SYMBOLS).symbols;
  return lib;
}

const P = (p: number) => p as unknown as Pointer;

export function check(status: number, what: string): void {
  if (status !== 0) throw new Error(`${what} failed: ${cudart().cudaGetErrorString(status)} (CUDA error ${status})`);
}

/** Calls `fn` with an 8-byte out-parameter and returns the pointer-sized value written there. */
function out(fn: (slot: BigUint64Array) => number, what: string): number {
  const slot = new BigUint64Array(1);
  check(fn(slot), what);
  return Number(slot[0]);
}

export const cuda = {
  deviceCount(): number {
    const n = new Int32Array(1);
    return cudart().cudaGetDeviceCount(n) === 0 ? n[0] : 0;
  },
  setDevice: (device: number) => check(cudart().cudaSetDevice(device), `cudaSetDevice(${device})`),
  deviceName(device: number): string {
    const props = new Uint8Array(16384); // cudaDeviceProp starts with char name[256]
    check(cudart().cudaGetDeviceProperties(props, device), "cudaGetDeviceProperties");
    return new TextDecoder().decode(props.subarray(0, props.indexOf(0)));
  },
  smCount(device: number): number {
    const v = new Int32Array(1);
    check(cudart().cudaDeviceGetAttribute(v, ATTR_MULTIPROCESSOR_COUNT, device), "cudaDeviceGetAttribute");
    return v[0];
  },
  computeCapabilityMajor(device: number): number {
    const v = new Int32Array(1);
    check(cudart().cudaDeviceGetAttribute(v, ATTR_COMPUTE_CAPABILITY_MAJOR, device), "cudaDeviceGetAttribute");
    return v[0];
  },
  memInfo(): { free: number; total: number } {
    const f = new BigUint64Array(1), t = new BigUint64Array(1);
    check(cudart().cudaMemGetInfo(f, t), "cudaMemGetInfo");
    return { free: Number(f[0]), total: Number(t[0]) };
  },
  malloc: (bytes: number) => out((s) => cudart().cudaMalloc(s, bytes), `cudaMalloc(${bytes} bytes)`),
  free: (p: number) => check(cudart().cudaFree(P(p)), "cudaFree"),
  mallocHost: (bytes: number) => out((s) => cudart().cudaMallocHost(s, bytes), `cudaMallocHost(${bytes} bytes)`),
  freeHost: (p: number) => check(cudart().cudaFreeHost(P(p)), "cudaFreeHost"),
  memcpyAsync(dst: number | ArrayBufferView, src: number | ArrayBufferView, bytes: number, kind: number, stream: number): void {
    check(cudart().cudaMemcpyAsync(dst as Pointer, src as Pointer, bytes, kind, P(stream)), "cudaMemcpyAsync");
  },
  memsetAsync: (p: number, byte: number, bytes: number, stream: number) =>
    check(cudart().cudaMemsetAsync(P(p), byte, bytes, P(stream)), "cudaMemsetAsync"),
  createStream: () => out((s) => cudart().cudaStreamCreateWithFlags(s, STREAM_NON_BLOCKING), "cudaStreamCreate"),
  destroyStream: (s: number) => check(cudart().cudaStreamDestroy(P(s)), "cudaStreamDestroy"),
  synchronize: (s: number) => check(cudart().cudaStreamSynchronize(P(s)), "cudaStreamSynchronize"),
  waitEvent: (s: number, e: number) => check(cudart().cudaStreamWaitEvent(P(s), P(e), 0), "cudaStreamWaitEvent"),
  createEvent: (timing = false) =>
    out((s) => cudart().cudaEventCreateWithFlags(s, timing ? 0 : EVENT_DISABLE_TIMING), "cudaEventCreate"),
  destroyEvent: (e: number) => check(cudart().cudaEventDestroy(P(e)), "cudaEventDestroy"),
  record: (e: number, s: number) => check(cudart().cudaEventRecord(P(e), P(s)), "cudaEventRecord"),
  eventSynchronize: (e: number) => check(cudart().cudaEventSynchronize(P(e)), "cudaEventSynchronize"),
  /** true once all work before the event's record has finished. */
  eventDone(e: number): boolean {
    const status = cudart().cudaEventQuery(P(e));
    if (status === ERROR_NOT_READY) return false;
    check(status, "cudaEventQuery");
    return true;
  },
  elapsedMs(start: number, end: number): number {
    const ms = new Float32Array(1);
    check(cudart().cudaEventElapsedTime(ms, P(start), P(end)), "cudaEventElapsedTime");
    return ms[0];
  },
  beginCapture: (s: number) => check(cudart().cudaStreamBeginCapture(P(s), CAPTURE_MODE_THREAD_LOCAL), "cudaStreamBeginCapture"),
  endCapture: (s: number) => out((slot) => cudart().cudaStreamEndCapture(P(s), slot), "cudaStreamEndCapture"),
  instantiate: (graph: number) => out((slot) => cudart().cudaGraphInstantiateWithFlags(slot, P(graph), 0), "cudaGraphInstantiate"),
  launchGraph: (exec: number, s: number) => check(cudart().cudaGraphLaunch(P(exec), P(s)), "cudaGraphLaunch"),
  /** The dependency type of each edge of a graph (0: full completion, 1: programmatic). */
  graphEdgeTypes(graph: number): number[] {
    const count = new BigUint64Array(1);
    check(cudart().cudaGraphGetEdges(P(graph), null, null, null, count), "cudaGraphGetEdges");
    const n = Number(count[0]);
    if (n === 0) return [];
    const from = new BigUint64Array(n), to = new BigUint64Array(n), data = new Uint8Array(8 * n); // cudaGraphEdgeData: 8 bytes
    check(cudart().cudaGraphGetEdges(P(graph), from, to, data, count), "cudaGraphGetEdges");
    return Array.from({ length: n }, (_, i) => data[8 * i + 2]); // .type
  },
  destroyGraph(graph: number, exec: number): void {
    check(cudart().cudaGraphExecDestroy(P(exec)), "cudaGraphExecDestroy");
    check(cudart().cudaGraphDestroy(P(graph)), "cudaGraphDestroy");
  },
};
