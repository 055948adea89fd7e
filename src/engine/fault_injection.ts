// A test hook: make one rank of a tensor-parallel group fail at a given step, to check that the whole
// group stops with a clear error instead of hanging. Set on the main thread, before the ranks start:
//   MINISGL_TP_INJECT_FAULT=<rank>:<step>:throw       the rank throws when it reaches that step's plan
//   MINISGL_TP_INJECT_FAULT=<rank>:<step>:hang:<ms>   the rank stalls that long (past the collective timeout)

export interface FaultInjection {
  rank: number;
  step: number;
  kind: "throw" | "hang";
  hangMs: number;
}

export function faultFromEnv(value = process.env.MINISGL_TP_INJECT_FAULT): FaultInjection | null {
  if (!value) return null;
  const m = /^(\d+):(\d+):(throw|hang)(?::(\d+))?$/.exec(value);
  if (!m || (m[3] === "hang" && m[4] === undefined)) {
    throw new Error(`MINISGL_TP_INJECT_FAULT must be <rank>:<step>:throw or <rank>:<step>:hang:<ms> (got ${JSON.stringify(value)})`);
  }
  return { rank: Number(m[1]), step: Number(m[2]), kind: m[3] as FaultInjection["kind"], hangMs: Number(m[4] ?? 0) };
}

/** Called by each rank as it starts a step. */
export function injectFault(fault: FaultInjection | null, rank: number, step: number): void {
  if (!fault || fault.rank !== rank || fault.step !== step) return;
  if (fault.kind === "throw") throw new Error(`injected fault at step ${step} (MINISGL_TP_INJECT_FAULT)`);
  Bun.sleepSync(fault.hangMs);
}
