// The small all-reduces of a tensor-parallel group whose ranks are all threads of this process, as one kernel
// that writes straight into every peer GPU's staging buffers (cuda/kernels/peer_all_reduce.cu), optionally
// fused with the residual add + RMSNorm that follows. A Qwen3-8B decode step makes 73 of them, of 8 KB to
// 2 MB each; NCCL's fixed cost per call is what this removes. Larger ones and groups spanning nodes stay on
// NCCL. Joining is collective: every rank enables peer access to every other GPU, and if any pair cannot,
// all ranks go without (they must all take the same path).
import { dlopen, FFIType, type Pointer, toArrayBuffer } from "bun:ffi";
import type { GroupControl } from "../ipc/group_control.ts";
import { cuda } from "./cudart.ts";
import { type CudaBackend, GEMV_MAX_ROWS, gemvEnabled } from "./cuda.ts";
import type { DevicePtr } from "./backend.ts";
import { CUDA_LIBRARY } from "./library_paths.ts";

const { ptr, i32, i64, f32, cstring } = FFIType;

const SYMBOLS = {
  msgl_peer_region_bytes: { args: [i64, i32], returns: i64 },
  msgl_peer_enable: { args: [i32], returns: i32 },
  msgl_peer_all_reduce: { args: [ptr, i64, ptr, i32, i32, i64, ptr, i64, ptr], returns: i32 },
  msgl_peer_all_reduce_add_rmsnorm: { args: [ptr, ptr, ptr, ptr, i32, i32, f32, ptr, i32, i32, i64, ptr, i64, ptr], returns: i32 },
  msgl_peer_gemv_all_reduce_add_rmsnorm: {
    args: [ptr, ptr, ptr, ptr, i32, ptr, ptr, i32, i32, f32, ptr, i32, i32, i64, ptr, i64, ptr], returns: i32,
  },
  msgl_last_error: { args: [], returns: cstring },
} as const;

/** Bytes of one rank's staging slot: all-reduces up to this size take the peer path (a 256-token batch of
 * Qwen3-8B's 4096-wide hidden states is 2 MiB). Each rank holds 3 × size slots. */
export const PEER_CAPACITY_BYTES = 4 << 20;
const FUSED_MAX_DIM = 8192;
const OK = 0;
const KERNEL_TIMEOUT_MARGIN_MS = 5000; // the host's own timeout fires first; the kernel's trap is the backstop

// Shared words: arrivals, enabled, refused, closing; then per rank its device; then (as 64-bit words at
// SLOTS) the abort word's address and every rank's region address.
const ARRIVED = 0, ENABLED = 1, REFUSED = 2, CLOSING = 3, DEVICES = 4;
const SLOTS = 16; // 64-bit index: [SLOTS] = abort word, [SLOTS + 1 + r] = region of rank r
const MAX_RANKS = 8;

let lib: ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"] | null = null;
const P = (p: number) => p as unknown as Pointer;

/** Peer access is off when MINISGL_PEER_ALL_REDUCE=0 (every all-reduce then goes to NCCL). */
export function peerAllReduceEnabled(): boolean {
  return process.env.MINISGL_PEER_ALL_REDUCE !== "0";
}

/** The decode GEMV writing straight into the all-reduce (gemvAllReduceAddRmsnorm) is off when
 * MINISGL_STAGED_ALL_REDUCE=0, and with the GEMV itself (MINISGL_GEMV=0). Read once: fitsGemv runs per layer. */
const stagedEnabled = gemvEnabled && process.env.MINISGL_STAGED_ALL_REDUCE !== "0";

export class PeerAllReduce {
  static createShared(): SharedArrayBuffer {
    return new SharedArrayBuffer(8 * (SLOTS + 1 + MAX_RANKS));
  }

  /** Collective over the group: null (on every rank) when the group has more than 8 ranks or some pair of
   * its GPUs has no peer access. */
  static join(backend: CudaBackend, shared: SharedArrayBuffer, rank: number, size: number, control: GroupControl,
    timeoutMs: number): PeerAllReduce | null {
    if (size < 2 || size > MAX_RANKS) return null;
    lib ??= dlopen(CUDA_LIBRARY, SYMBOLS).symbols;
    const words = new Int32Array(shared, 0, SLOTS * 2);
    const slots = new BigUint64Array(shared);
    const barrier = (index: number, count: () => number, what: string) => {
      const started = performance.now();
      while (count() < size) {
        control.throwIfFailed();
        if (performance.now() - started > timeoutMs) throw new Error(`peer all-reduce: ${what} timed out after ${timeoutMs / 1000} s`);
        Atomics.wait(words, index, Atomics.load(words, index), 50);
      }
    };
    const arrive = (index: number) => {
      Atomics.add(words, index, 1);
      Atomics.notify(words, index);
    };

    if (rank === 0) {
      const abortWord = cuda.mallocHost(4); // pinned memory is mapped for every GPU (unified addressing)
      new Int32Array(toArrayBuffer(P(abortWord), 0, 4))[0] = 0;
      slots[SLOTS] = BigInt(abortWord);
    }
    const regionBytes = Number(lib.msgl_peer_region_bytes(PEER_CAPACITY_BYTES, size));
    const region = backend.alloc(regionBytes);
    cuda.memsetAsync(region, 0, regionBytes, backend.stream);
    backend.synchronize(); // zero before any peer may signal into it
    slots[SLOTS + 1 + rank] = BigInt(region);
    Atomics.store(words, DEVICES + rank, backend.device);
    arrive(ARRIVED);
    barrier(ARRIVED, () => Atomics.load(words, ARRIVED), "waiting for the other ranks' buffers");

    let refused: string | null = null;
    for (let peer = 0; peer < size && !refused; peer++) {
      if (peer !== rank && lib.msgl_peer_enable(Atomics.load(words, DEVICES + peer)) !== OK) refused = String(lib.msgl_last_error());
    }
    arrive(refused ? REFUSED : ENABLED);
    barrier(ENABLED, () => Atomics.load(words, ENABLED) + Atomics.load(words, REFUSED), "enabling peer access");
    if (Atomics.load(words, REFUSED) > 0) {
      backend.free(region);
      return null;
    }
    const regions = BigUint64Array.from({ length: size }, (_, r) => slots[SLOTS + 1 + r]);
    const staged = backend.alloc(GEMV_MAX_ROWS * FUSED_MAX_DIM * 2);
    backend.fill(staged, 0, GEMV_MAX_ROWS * FUSED_MAX_DIM * 2);
    return new PeerAllReduce(backend, rank, size, region, staged, regions, Number(slots[SLOTS]), words, control, timeoutMs);
  }

  private closed = false;
  private readonly kernelTimeoutNs: number;

  private constructor(
    private readonly backend: CudaBackend,
    private readonly rank: number,
    private readonly size: number,
    private readonly region: DevicePtr,
    private readonly staged: DevicePtr, // the GEMV outputs gemvAllReduceAddRmsnorm reads as they arrive; zero between calls
    private readonly regions: BigUint64Array,
    private readonly abortWord: number,
    private readonly words: Int32Array,
    private readonly control: GroupControl,
    private readonly timeoutMs: number,
  ) {
    this.kernelTimeoutNs = (timeoutMs + KERNEL_TIMEOUT_MARGIN_MS) * 1e6;
  }

  /** Whether an all-reduce of `count` bf16 values takes this path (same answer on every rank). */
  fits(count: number): boolean {
    return count * 2 <= PEER_CAPACITY_BYTES && count % 8 === 0;
  }

  /** Whether the fused all-reduce + add + RMSNorm of [rows, dim] takes this path (its rows are held in
   * registers: at most 8192 wide). */
  fitsRows(rows: number, dim: number): boolean {
    return this.fits(rows * dim) && dim % 8 === 0 && dim <= FUSED_MAX_DIM;
  }

  /** Whether gemvAllReduceAddRmsnorm takes [rows, dim] outputs of a GEMV over k inputs (the same answer on
   * every rank). */
  fitsGemv(rows: number, dim: number, k: number): boolean {
    return stagedEnabled && rows >= 1 && rows <= GEMV_MAX_ROWS && this.fitsRows(rows, dim) && k % 8 === 0;
  }

  allReduceSum(buf: DevicePtr, count: number): void {
    const status = lib!.msgl_peer_all_reduce(P(buf), count, this.regions, this.rank, this.size, PEER_CAPACITY_BYTES,
      P(this.abortWord), this.kernelTimeoutNs, P(this.backend.stream));
    if (status !== OK) throw new Error(`peer all-reduce failed: ${lib!.msgl_last_error()}`);
  }

  /** residual += Σ_ranks x; out = rmsnorm(residual) · weight (x: [rows, dim] bf16, unchanged), bit for bit
   * as allReduceSum(x) then msgl_add_rmsnorm; rows · dim must fit (see fits). */
  allReduceAddRmsnorm(out: DevicePtr, residual: DevicePtr, x: DevicePtr, weight: DevicePtr, rows: number, dim: number, eps: number): void {
    const status = lib!.msgl_peer_all_reduce_add_rmsnorm(P(out), P(residual), P(x), P(weight), rows, dim, eps, this.regions,
      this.rank, this.size, PEER_CAPACITY_BYTES, P(this.abortWord), this.kernelTimeoutNs, P(this.backend.stream));
    if (status !== OK) throw new Error(`peer all-reduce + add_rmsnorm failed: ${lib!.msgl_last_error()}`);
  }

  /** allReduceAddRmsnorm(x = a · mat^T) for a: [rows, k] and mat: [dim, k], bit for bit as msgl_gemm then
   * allReduceAddRmsnorm; the all-reduce takes each GEMV output as soon as it is written (see fitsGemv). */
  gemvAllReduceAddRmsnorm(out: DevicePtr, residual: DevicePtr, a: DevicePtr, mat: DevicePtr, k: number, weight: DevicePtr,
    rows: number, dim: number, eps: number): void {
    const status = lib!.msgl_peer_gemv_all_reduce_add_rmsnorm(P(out), P(residual), P(a), P(mat), k, P(this.staged), P(weight), rows,
      dim, eps, this.regions, this.rank, this.size, PEER_CAPACITY_BYTES, P(this.abortWord), this.kernelTimeoutNs,
      P(this.backend.stream));
    if (status !== OK) throw new Error(`peer GEMV + all-reduce + add_rmsnorm failed: ${lib!.msgl_last_error()}`);
  }

  /** After every rank's last all-reduce: frees the buffers once every rank's GPU finished its kernels (until
   * then a peer may still read this rank's buffer). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.backend.synchronize(); // this rank's kernels, which read the peers' buffers, have ended
    } catch {
      return this.abort();
    }
    Atomics.add(this.words, CLOSING, 1);
    Atomics.notify(this.words, CLOSING);
    const started = performance.now();
    while (Atomics.load(this.words, CLOSING) < this.size) {
      if (this.control.failure || performance.now() - started > this.timeoutMs) return this.abort(); // leak, never free under a reader
      Atomics.wait(this.words, CLOSING, Atomics.load(this.words, CLOSING), 50);
    }
    this.backend.free(this.region);
    this.backend.free(this.staged);
    if (this.rank === 0) cuda.freeHost(this.abortWord); // all ranks are past their last kernel
  }

  /** After a failure: every rank's waiting kernels give up (the buffers stay allocated: a peer may still read). */
  abort(): void {
    this.closed = true;
    new Int32Array(toArrayBuffer(P(this.abortWord), 0, 4))[0] = 1;
  }
}
