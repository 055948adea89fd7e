// The CUDA backend: device memory from cudaMalloc (start-up only), our kernels from build/libmsgl_cuda.so
// on one non-blocking stream, GEMMs through cuBLASLt, host → device copies through pinned staging.
import { toArrayBuffer, type Pointer } from "bun:ffi";
import type { Backend, DevicePtr } from "./backend.ts";
import { CublasLt, CUBLASLT_WORKSPACE_BYTES } from "./cublaslt.ts";
import { cuda, MEMCPY } from "./cudart.ts";
import { openMsglLibrary } from "./library.ts";
import { CUDA_LIBRARY } from "./library_paths.ts";
import { NativeOps, type MsglLibrary } from "./native_ops.ts";
import { PinnedStaging } from "./pinned_staging.ts";

const STAGING_BYTES = 32 << 20;
const READBACK_SLOTS = 4;
const READBACK_SLOT_BYTES = 1 << 20;
/** Up to this many rows msgl_gemm's GEMV streams the weights faster than cuBLASLt (bench/RESULTS.md). */
export const GEMV_MAX_ROWS = 2;
export const gemvEnabled = process.env.MINISGL_GEMV !== "0";

/** The kernels of libmsgl_cuda, except GEMMs of more than GEMV_MAX_ROWS rows, which go to cuBLASLt. */
class CudaOps extends NativeOps {
  // msgl_gemm_silu_mul is the GEMV: with MINISGL_GEMV=0 the model runs cuBLASLt + silu_mul instead.
  override readonly gemmSiluMulMaxRows = gemvEnabled ? GEMV_MAX_ROWS : 0;

  constructor(lib: MsglLibrary, stream: DevicePtr, private readonly lt: CublasLt) {
    super(lib, stream);
  }

  override gemm(y: DevicePtr, x: DevicePtr, w: DevicePtr, bias: DevicePtr, m: number, n: number, k: number, xStride: number,
    outF32: boolean): void {
    const gemv = gemvEnabled && m <= GEMV_MAX_ROWS && k % 8 === 0 && xStride % 8 === 0 && x % 16 === 0 && w % 16 === 0;
    if (gemv) super.gemm(y, x, w, bias, m, n, k, xStride, outF32);
    else this.lt.gemm(y, x, w, bias, m, n, k, xStride, outF32, this.stream);
  }
}

export class CudaBackend implements Backend {
  readonly kind = "cuda" as const;
  readonly ops: NativeOps;
  /** The kernels' own msgl_gemm instead of cuBLASLt (tests compare the two). */
  readonly kernelOps: NativeOps;
  readonly stream: number;
  readonly name: string;
  readonly smCount: number;
  readonly totalMemory: number;
  readonly lt: CublasLt;
  private readonly staging: PinnedStaging;
  private readonly readback: { address: number; host: Uint8Array; event: number }[] = [];
  private readbackBase = 0;
  private nextReadback = 0;
  private readonly ltWorkspace: number;
  private readonly sizes = new Map<DevicePtr, number>();
  private allocated = 0;
  private readonly syncEvent: number;
  private watch: { check: () => void; timeoutMs: number } | null = null;

  /** Binds the calling thread to `device`; throws with the reason when CUDA or the library is missing. */
  constructor(readonly device = 0) {
    const lib = openMsglLibrary(CUDA_LIBRARY, "cuda/kernels");
    const count = cuda.deviceCount();
    if (device >= count) throw new Error(`CUDA device ${device} requested but ${count} found`);
    cuda.setDevice(device);
    this.name = cuda.deviceName(device);
    this.smCount = cuda.smCount(device);
    this.totalMemory = cuda.memInfo().total;
    this.stream = cuda.createStream();
    this.ltWorkspace = this.alloc(CUBLASLT_WORKSPACE_BYTES);
    this.lt = new CublasLt(this.ltWorkspace);
    this.ops = new CudaOps(lib, this.stream, this.lt);
    this.kernelOps = new NativeOps(lib, this.stream);
    this.staging = new PinnedStaging(STAGING_BYTES);
    this.syncEvent = cuda.createEvent();
    this.readbackBase = cuda.mallocHost(READBACK_SLOTS * READBACK_SLOT_BYTES);
    for (let i = 0; i < READBACK_SLOTS; i++) {
      const at = this.readbackBase + i * READBACK_SLOT_BYTES;
      this.readback.push({ address: at, host: new Uint8Array(toArrayBuffer(at as unknown as Pointer, 0, READBACK_SLOT_BYTES)), event: cuda.createEvent() });
    }
  }

  /** From now on every wait for the GPU polls instead of blocking, calling `check` every few milliseconds
   * (it throws to give up), and gives up itself after `timeoutMs`. Tensor-parallel ranks use it: a wait
   * on a collective whose peer died would otherwise never return. */
  watchWaits(check: () => void, timeoutMs: number): void {
    this.watch = { check, timeoutMs };
  }

  private waitFor(event: number): void {
    const watch = this.watch;
    if (!watch) return cuda.eventSynchronize(event);
    const started = performance.now();
    for (let polls = 1; !cuda.eventDone(event); polls++) {
      if (polls % 256 !== 0) continue;
      watch.check();
      const waited = performance.now() - started;
      if (waited > watch.timeoutMs) {
        throw new Error(`waiting for the GPU timed out after ${(watch.timeoutMs / 1000).toFixed(1)} s (a collective whose peer never came?)`);
      }
      if (waited > 5) Bun.sleepSync(0.05);
    }
  }

  get allocatedBytes(): number {
    return this.allocated;
  }

  alloc(bytes: number): DevicePtr {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const p = cuda.malloc(Math.max(bytes, 1));
    this.sizes.set(p, bytes);
    this.allocated += bytes;
    return p;
  }

  free(p: DevicePtr): void {
    const bytes = this.sizes.get(p);
    if (bytes === undefined) throw new Error(`free: ${p} was not allocated by this backend`);
    this.sizes.delete(p);
    this.allocated -= bytes;
    cuda.free(p);
  }

  upload(dst: DevicePtr, src: ArrayBufferView): void {
    if (src.byteLength > 0) this.staging.upload(dst, src, this.stream);
  }

  download(dst: ArrayBufferView, src: DevicePtr): void {
    if (dst.byteLength === 0) return;
    cuda.memcpyAsync(dst, src, dst.byteLength, MEMCPY.deviceToHost, this.stream);
    this.synchronize();
  }

  downloadLater(src: DevicePtr, bytes: number): () => Uint8Array {
    if (bytes > READBACK_SLOT_BYTES) throw new Error(`downloadLater: ${bytes} bytes exceed a ${READBACK_SLOT_BYTES}-byte readback slot`);
    // Slots rotate; a caller holds at most a few pending readbacks, so slot i is free again by its next turn.
    const slot = this.readback[this.nextReadback];
    this.nextReadback = (this.nextReadback + 1) % READBACK_SLOTS;
    cuda.memcpyAsync(slot.address, src, bytes, MEMCPY.deviceToHost, this.stream);
    cuda.record(slot.event, this.stream);
    return () => {
      this.waitFor(slot.event);
      return slot.host.slice(0, bytes);
    };
  }

  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    if (bytes > 0) cuda.memcpyAsync(dst, src, bytes, MEMCPY.deviceToDevice, this.stream);
  }

  fill(dst: DevicePtr, byte: number, bytes: number): void {
    if (bytes > 0) cuda.memsetAsync(dst, byte, bytes, this.stream);
  }

  synchronize(): void {
    if (!this.watch) return cuda.synchronize(this.stream);
    cuda.record(this.syncEvent, this.stream);
    this.waitFor(this.syncEvent);
  }

  close(): void {
    cuda.synchronize(this.stream);
    this.lt.close();
    this.staging.close();
    for (const slot of this.readback) cuda.destroyEvent(slot.event);
    cuda.destroyEvent(this.syncEvent);
    cuda.freeHost(this.readbackBase);
    for (const p of [...this.sizes.keys()]) this.free(p);
    cuda.destroyStream(this.stream);
  }
}

/** Why no CUDA backend can be opened here, or null when one can. */
export function cudaUnavailableReason(): string | null {
  try {
    if (cuda.deviceCount() === 0) return "no CUDA device found";
    openMsglLibrary(CUDA_LIBRARY, "cuda/kernels");
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
