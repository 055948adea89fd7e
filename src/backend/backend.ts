// What the model and engine need from a device: memory, copies, ordering, and the native ops.
// The CPU backend implements streams and events as no-ops; the CUDA backend maps them to the real thing.
import type { DevicePtr, NativeOps } from "./native_ops.ts";

export type { DevicePtr } from "./native_ops.ts";
export type DeviceKind = "cpu" | "cuda";

export interface Backend {
  readonly kind: DeviceKind;
  readonly ops: NativeOps;
  /** Device memory, at least 256-byte aligned, contents undefined. */
  alloc(bytes: number): DevicePtr;
  free(p: DevicePtr): void;
  /** Host → device, ordered on the backend's stream. */
  upload(dst: DevicePtr, src: ArrayBufferView): void;
  /** Device → host; returns once `dst` holds the data. */
  download(dst: ArrayBufferView, src: DevicePtr): void;
  /** Starts a device → host copy ordered on the stream; the returned function waits for it and returns a
   * copy of the bytes. At most 4 may be pending at once. */
  downloadLater(src: DevicePtr, bytes: number): () => Uint8Array;
  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void;
  fill(dst: DevicePtr, byte: number, bytes: number): void;
  synchronize(): void;
  /** Bytes currently allocated through alloc(). */
  readonly allocatedBytes: number;
  close(): void;
}
