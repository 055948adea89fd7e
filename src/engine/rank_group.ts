// The shared memory of one tensor-parallel group of rank Workers, made on the main thread and sent to
// every rank: the group's failure flag, the CPU communicator's buffer, the slot for NCCL's unique id, the
// peer all-reduce's handshake and one step-plan ring per rank ≥ 1. Each rank joins with its backend: a
// Communicator for the model's collectives (shared memory on the CPU; on GPUs NCCL, with small all-reduces
// over peer access when all ranks are in this process), and on rank 0 the StepPublisher, on the others
// the ring it reads its plans from.
import type { Backend } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
import { CudaBackend } from "../backend/cuda.ts";
import { NCCL_UNIQUE_ID_BYTES, NcclCommunicator, ncclUniqueId } from "../backend/nccl.ts";
import { PeerAllReduce, peerAllReduceEnabled } from "../backend/peer_all_reduce.ts";
import { DEFAULT_COLLECTIVE_TIMEOUT_MS, SharedMemoryCommunicator } from "../backend/shared_memory_communicator.ts";
import { GroupControl } from "../ipc/group_control.ts";
import { SharedRing } from "../ipc/ring.ts";
import { type FaultInjection, faultFromEnv } from "./fault_injection.ts";
import { StepPublisher } from "./step_publisher.ts";

const PLAN_RING_WORDS = 1 << 21; // 8 MiB per rank

export interface RankGroupInit {
  size: number;
  control: SharedArrayBuffer;
  comm: SharedArrayBuffer;
  ncclId: SharedArrayBuffer; // [0]: 1 once the id (bytes 4 … 4 + 128) is written
  planRings: SharedArrayBuffer[]; // [r − 1]: the plans of rank r
  peer: SharedArrayBuffer | null; // the peer all-reduce's handshake; null when the group spans nodes
  timeoutMs: number; // a collective waiting longer for a rank fails the group
  fault: FaultInjection | null;
}

export interface RankGroupOptions {
  timeoutMs?: number; // default MINISGL_TP_TIMEOUT_S, else 120 s
  fault?: FaultInjection | null; // default from MINISGL_TP_INJECT_FAULT
  spansNodes?: boolean; // ranks on other machines: every collective goes over NCCL
}

export function createRankGroup(size: number, o: RankGroupOptions = {}): RankGroupInit {
  if (!Number.isInteger(size) || size < 2) throw new Error(`a rank group needs at least 2 ranks (got ${size})`);
  const envTimeout = process.env.MINISGL_TP_TIMEOUT_S;
  const timeoutMs = o.timeoutMs ?? (envTimeout ? Number(envTimeout) * 1000 : DEFAULT_COLLECTIVE_TIMEOUT_MS);
  if (!(timeoutMs > 0)) throw new Error(`MINISGL_TP_TIMEOUT_S must be a positive number of seconds (got ${JSON.stringify(envTimeout)})`);
  return {
    size,
    control: GroupControl.create().buffer,
    comm: SharedMemoryCommunicator.createBuffer(size),
    ncclId: new SharedArrayBuffer(4 + NCCL_UNIQUE_ID_BYTES),
    planRings: Array.from({ length: size - 1 }, () => SharedRing.create(PLAN_RING_WORDS).buffer),
    peer: o.spansNodes ? null : PeerAllReduce.createShared(),
    timeoutMs,
    fault: o.fault === undefined ? faultFromEnv() : o.fault,
  };
}

export interface RankMember {
  control: GroupControl;
  comm: Communicator;
}

export function joinRankGroup(init: RankGroupInit, rank: number, backend: Backend): RankMember {
  const control = GroupControl.attach(init.control);
  if (!(backend instanceof CudaBackend)) {
    return { control, comm: new SharedMemoryCommunicator(backend, control, init.comm, rank, init.size, init.timeoutMs) };
  }
  if (rank === 0) publishNcclId(init.ncclId, ncclUniqueId());
  const id = awaitNcclId(init.ncclId, control, init.timeoutMs);
  const peer = init.peer && peerAllReduceEnabled() ? PeerAllReduce.join(backend, init.peer, rank, init.size, control, init.timeoutMs) : null;
  const comm = new NcclCommunicator(backend, id, rank, init.size, peer);
  backend.watchWaits(() => {
    control.throwIfFailed();
    comm.checkAsyncError();
  }, init.timeoutMs);
  return { control, comm };
}

export function publishNcclId(slot: SharedArrayBuffer, id: Uint8Array): void {
  new Uint8Array(slot, 4).set(id);
  const state = new Int32Array(slot, 0, 1);
  Atomics.store(state, 0, 1);
  Atomics.notify(state, 0);
}

/** The id rank 0 (or, on another node, the rendezvous) wrote into the slot. */
export function awaitNcclId(slot: SharedArrayBuffer, control: GroupControl, timeoutMs: number): Uint8Array {
  const state = new Int32Array(slot, 0, 1);
  const started = performance.now();
  while (Atomics.load(state, 0) === 0) {
    control.throwIfFailed();
    if (performance.now() - started > timeoutMs) throw new Error(`no NCCL unique id from rank 0 within ${timeoutMs / 1000} s`);
    Atomics.wait(state, 0, 0, 100);
  }
  return new Uint8Array(slot, 4, NCCL_UNIQUE_ID_BYTES).slice();
}

export interface RankLeader extends RankMember {
  publisher: StepPublisher;
}

export function leadRankGroup(init: RankGroupInit, backend: Backend): RankLeader {
  const member = joinRankGroup(init, 0, backend);
  const rings = init.planRings.map((b) => SharedRing.attach(b));
  return { ...member, publisher: new StepPublisher(rings, member.control, init.fault) };
}

/** After a failure on rank 0: wakes ranks waiting for a plan (their ring is closed). */
export function closePlanRings(init: RankGroupInit): void {
  for (const b of init.planRings) SharedRing.attach(b).close();
}
