// --device auto | cpu | cuda. "auto" (the default) picks CUDA when a GPU is visible and build/libmsgl_cuda.so
// loads (present, built from the current sources, same ABI), else the CPU, and says why when a GPU was there.
import { cudaUnavailableReason } from "./backend/cuda.ts";
import type { DeviceKind } from "./backend/backend.ts";

export const DEVICE_CHOICES = ["auto", "cpu", "cuda"] as const;
export type DeviceFlag = (typeof DEVICE_CHOICES)[number];

export interface DeviceSelection {
  device: DeviceKind;
  /** A line for the log when "auto" fell back to the CPU although a GPU seems present; null otherwise. */
  note: string | null;
}

/** `probe` says why CUDA cannot be used here, or null when it can (the real check by default). */
export function selectDevice(flag: DeviceFlag, probe: () => string | null = cudaUnavailableReason): DeviceSelection {
  if (flag !== "auto") return { device: flag, note: null };
  const reason = probe();
  if (reason === null) return { device: "cuda", note: null };
  const gpuAbsent = /no CUDA device|libcudart|cannot open shared object|No such file/i.test(reason);
  return { device: "cpu", note: gpuAbsent ? null : `--device auto: using the CPU because CUDA is unavailable (${reason})` };
}
