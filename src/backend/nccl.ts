// The GPU Communicator: NCCL through bun:ffi (libnccl.so.2 from the system, or MINISGL_NCCL_LIBRARY).
// Collectives are enqueued on the backend's stream, so CUDA graphs capture them like any kernel. The one
// call bun:ffi cannot make (ncclCommInitRank takes its unique id by value) goes through a forwarder in
// our CUDA library (cuda/kernels/nccl_init.cu). Small all-reduces take the peer-access kernel instead when
// the group has one (src/backend/peer_all_reduce.ts).
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { CUDA_LIBRARY } from "./library_paths.ts";
import type { Communicator } from "./communicator.ts";
import type { CudaBackend } from "./cuda.ts";
import type { DevicePtr } from "./backend.ts";
import type { PeerAllReduce } from "./peer_all_reduce.ts";

const { ptr, i32, u64, cstring } = FFIType;

export const NCCL_UNIQUE_ID_BYTES = 128;
const NCCL_FLOAT32 = 7;
const NCCL_BFLOAT16 = 9;
const NCCL_SUM = 0;
const NCCL_IN_PROGRESS = 7;

const SYMBOLS = {
  ncclGetUniqueId: { args: [ptr], returns: i32 },
  ncclGetErrorString: { args: [i32], returns: cstring },
  ncclGetLastError: { args: [ptr], returns: cstring },
  ncclCommGetAsyncError: { args: [ptr, ptr], returns: i32 },
  ncclAllReduce: { args: [ptr, ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  ncclAllGather: { args: [ptr, ptr, u64, i32, ptr, ptr], returns: i32 },
  ncclCommDestroy: { args: [ptr], returns: i32 },
  ncclCommAbort: { args: [ptr], returns: i32 },
} as const;

export function ncclLibraryPath(): string {
  return process.env.MINISGL_NCCL_LIBRARY ?? "libnccl.so.2";
}

const FORWARDER = {
  msgl_nccl_comm_init_rank: { args: [ptr, ptr, i32, ptr, i32], returns: i32 }, // (nccl library, comm*, nranks, id, rank)
} as const;

let lib: ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"] | null = null;
let forwarder: ReturnType<typeof dlopen<typeof FORWARDER>>["symbols"] | null = null;

function nccl() {
  if (!lib) {
    try {
      lib = dlopen(ncclLibraryPath(), SYMBOLS).symbols;
    } catch (e) {
      throw new Error(`cannot load NCCL (${ncclLibraryPath()}; set MINISGL_NCCL_LIBRARY to its path): ${(e as Error).message}`);
    }
  }
  return lib;
}

const P = (p: number) => p as unknown as Pointer;

function check(status: number, what: string, comm = 0): void {
  if (status === 0) return;
  const detail = comm ? nccl().ncclGetLastError(P(comm)) : "";
  throw new Error(`${what} failed: ${nccl().ncclGetErrorString(status)} (NCCL error ${status})${detail ? `: ${detail}` : ""}`);
}

/** A fresh unique id: made by one rank (rank 0), handed to all the others before they create their communicators. */
export function ncclUniqueId(): Uint8Array {
  const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
  check(nccl().ncclGetUniqueId(id), "ncclGetUniqueId");
  return id;
}

export class NcclCommunicator implements Communicator {
  private comm = 0;

  /** Blocks until every rank of the group has called it with the same id (call on the rank's own thread,
   * after its backend bound the thread to its GPU). */
  constructor(
    private readonly backend: CudaBackend,
    id: Uint8Array,
    readonly rank: number,
    readonly size: number,
    private readonly peer: PeerAllReduce | null = null,
  ) {
    if (id.byteLength !== NCCL_UNIQUE_ID_BYTES) throw new Error(`an NCCL unique id has ${NCCL_UNIQUE_ID_BYTES} bytes, got ${id.byteLength}`);
    nccl();
    forwarder ??= dlopen(CUDA_LIBRARY, FORWARDER).symbols;
    const slot = new BigUint64Array(1);
    const status = forwarder.msgl_nccl_comm_init_rank(Buffer.from(`${ncclLibraryPath()}\0`), slot, size, id, rank);
    if (status === -1 || status === -2) throw new Error(`cannot open ncclCommInitRank in ${ncclLibraryPath()}`);
    check(status, `ncclCommInitRank(rank ${rank} of ${size})`);
    this.comm = Number(slot[0]);
  }

  /** Whether small all-reduces go over peer access instead of NCCL. */
  get usesPeerAccess(): boolean {
    return this.peer !== null;
  }

  allReduceSum(buf: DevicePtr, count: number): void {
    if (this.peer?.fits(count)) return this.peer.allReduceSum(buf, count);
    check(nccl().ncclAllReduce(P(buf), P(buf), count, NCCL_BFLOAT16, NCCL_SUM, P(this.comm), P(this.backend.stream)), "ncclAllReduce", this.comm);
  }

  allReduceAddRmsnorm(out: DevicePtr, residual: DevicePtr, x: DevicePtr, weight: DevicePtr, rows: number, dim: number, eps: number): boolean {
    if (!this.peer?.fitsRows(rows, dim)) return false;
    this.peer.allReduceAddRmsnorm(out, residual, x, weight, rows, dim, eps);
    return true;
  }

  gemmAllReduceAddRmsnorm(out: DevicePtr, residual: DevicePtr, a: DevicePtr, mat: DevicePtr, k: number, weight: DevicePtr,
    rows: number, dim: number, eps: number): boolean {
    if (!this.peer?.fitsGemv(rows, dim, k)) return false;
    this.peer.gemvAllReduceAddRmsnorm(out, residual, a, mat, k, weight, rows, dim, eps);
    return true;
  }

  allGather(recv: DevicePtr, send: DevicePtr, count: number): void {
    check(nccl().ncclAllGather(P(send), P(recv), count, NCCL_FLOAT32, P(this.comm), P(this.backend.stream)), "ncclAllGather", this.comm);
  }

  /** Throws the communicator's asynchronous error (a peer lost, a network failure), if any. */
  checkAsyncError(): void {
    if (!this.comm) return;
    const r = new Int32Array(1);
    check(nccl().ncclCommGetAsyncError(P(this.comm), r), "ncclCommGetAsyncError", this.comm);
    if (r[0] !== 0 && r[0] !== NCCL_IN_PROGRESS) check(r[0], "an NCCL collective", this.comm);
  }

  /** Waits for the collectives in flight and frees the communicator. */
  close(): void {
    this.peer?.close();
    if (!this.comm) return;
    check(nccl().ncclCommDestroy(P(this.comm)), "ncclCommDestroy");
    this.comm = 0;
  }

  /** After a failure: frees the communicator without waiting for peers (work in flight is cancelled). */
  abort(): void {
    this.peer?.abort();
    if (!this.comm) return;
    nccl().ncclCommAbort(P(this.comm));
    this.comm = 0;
  }
}
