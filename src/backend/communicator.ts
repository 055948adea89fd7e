// Collectives among the ranks of one tensor-parallel group, on device buffers. Every rank calls the same
// collectives in the same order with the same counts (as NCCL requires); each call is ordered on the
// backend's stream like any op. Two implementations: SharedMemoryCommunicator (CPU backend, rank Workers
// of one process) and, on GPUs, one over NCCL (ncclAllReduce / ncclAllGather with this argument list).
import type { DevicePtr } from "./native_ops.ts";

export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** In place: buf[0, count) (bf16) becomes the elementwise sum over all ranks, with identical bits on
   * every rank (ncclAllReduce(buf, buf, count, ncclBfloat16, ncclSum, comm, stream)). */
  allReduceSum(buf: DevicePtr, count: number): void;
  /** recv[r·count, (r+1)·count) (fp32) = rank r's send[0, count), on every rank
   * (ncclAllGather(send, recv, count, ncclFloat32, comm, stream)). recv must not overlap send. */
  allGather(recv: DevicePtr, send: DevicePtr, count: number): void;
  /** Optional fusion of allReduceSum(x, rows · dim) and the addRmsnorm op that follows it (residual += x;
   * out = rmsnorm(residual) · weight), with the same bits; returns false where it does not apply (the caller
   * then makes both calls). x holds unspecified values afterwards. */
  allReduceAddRmsnorm?(out: DevicePtr, residual: DevicePtr, x: DevicePtr, weight: DevicePtr, rows: number, dim: number, eps: number): boolean;
  /** Optional fusion of the row-parallel GEMM x = a · mat^T (a: [rows, k], mat: [dim, k]) with
   * allReduceAddRmsnorm(out, residual, x, weight, rows, dim, eps), with the same bits; returns false where it
   * does not apply (the caller then runs the GEMM and allReduceAddRmsnorm). */
  gemmAllReduceAddRmsnorm?(out: DevicePtr, residual: DevicePtr, a: DevicePtr, mat: DevicePtr, k: number, weight: DevicePtr,
    rows: number, dim: number, eps: number): boolean;
  /** Frees this rank's resources; no collective may follow. */
  close(): void;
  /** After a failure: frees this rank's resources without waiting for the other ranks. */
  abort(): void;
}

/** A collective that cannot complete: the group failed (a rank threw, or a rank never arrived in time). */
export class CollectiveError extends Error {
  constructor(
    /** The rank where the failure started, and why. */
    readonly origin: number,
    readonly reason: string,
  ) {
    super(`tensor-parallel rank ${origin} failed: ${reason}`);
    this.name = "CollectiveError";
  }
}
