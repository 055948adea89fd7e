// The shared memory of one tensor-parallel group of rank Workers, made on the main thread and sent to
// every rank: the group's failure flag, the communicator's buffer and one step-plan ring per rank ≥ 1.
// Each rank joins with its backend: a Communicator for the model's collectives, and on rank 0 the
// StepPublisher, on the others the ring it reads its plans from.
import type { Backend } from "../backend/backend.ts";
import type { Communicator } from "../backend/communicator.ts";
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
  planRings: SharedArrayBuffer[]; // [r − 1]: the plans of rank r
  timeoutMs: number; // a collective waiting longer for a rank fails the group
  fault: FaultInjection | null;
}

export interface RankGroupOptions {
  timeoutMs?: number; // default MINISGL_TP_TIMEOUT_S, else 120 s
  fault?: FaultInjection | null; // default from MINISGL_TP_INJECT_FAULT
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
    planRings: Array.from({ length: size - 1 }, () => SharedRing.create(PLAN_RING_WORDS).buffer),
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
  if (backend.kind !== "cpu") throw new Error(`tensor parallelism on ${backend.kind} needs the NCCL communicator, which is not built yet`);
  return { control, comm: new SharedMemoryCommunicator(backend, control, init.comm, rank, init.size, init.timeoutMs) };
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
