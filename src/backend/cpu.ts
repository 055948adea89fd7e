// The CPU backend: host memory owned by JS ArrayBuffers, ops from build/libmsgl_cpu.so.
import { ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import type { Backend, DevicePtr } from "./backend.ts";
import { openMsglLibrary } from "./library.ts";
import { CPU_LIBRARY } from "./library_paths.ts";
import { NativeOps, type MsglLibrary } from "./native_ops.ts";

const ALIGN = 256;
let library: MsglLibrary | null = null;

function bytesAt(p: DevicePtr, bytes: number): Uint8Array {
  return new Uint8Array(toArrayBuffer(p as unknown as Pointer, 0, bytes));
}

export class CpuBackend implements Backend {
  readonly kind = "cpu" as const;
  readonly ops: NativeOps;
  // Keeps each allocation's ArrayBuffer alive until free(); the key is the aligned address handed out.
  private readonly buffers = new Map<DevicePtr, ArrayBuffer>();
  private allocated = 0;

  constructor() {
    library ??= openMsglLibrary(CPU_LIBRARY, "cuda/cpu");
    this.ops = new NativeOps(library);
  }

  get allocatedBytes(): number {
    return this.allocated;
  }

  alloc(bytes: number): DevicePtr {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`alloc: bad size ${bytes}`);
    const buffer = new ArrayBuffer(bytes + ALIGN);
    const base = ptr(buffer) as unknown as number;
    const aligned = Math.ceil(base / ALIGN) * ALIGN;
    this.buffers.set(aligned, buffer);
    this.allocated += bytes;
    return aligned;
  }

  free(p: DevicePtr): void {
    const buffer = this.buffers.get(p);
    if (!buffer) throw new Error(`free: ${p} was not allocated by this backend`);
    this.buffers.delete(p);
    this.allocated -= buffer.byteLength - ALIGN;
  }

  upload(dst: DevicePtr, src: ArrayBufferView): void {
    if (src.byteLength === 0) return;
    bytesAt(dst, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
  }

  download(dst: ArrayBufferView, src: DevicePtr): void {
    if (dst.byteLength === 0) return;
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(bytesAt(src, dst.byteLength));
  }

  downloadLater(src: DevicePtr, bytes: number): () => Uint8Array {
    const copy = bytesAt(src, bytes).slice();
    return () => copy;
  }

  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    if (bytes === 0) return;
    bytesAt(dst, bytes).set(bytesAt(src, bytes));
  }

  fill(dst: DevicePtr, byte: number, bytes: number): void {
    if (bytes === 0) return;
    bytesAt(dst, bytes).fill(byte);
  }

  synchronize(): void {}

  close(): void {
    this.buffers.clear();
    this.allocated = 0;
  }
}
