// The stall rule of the main thread's watchdog over a GPU tensor-parallel group (a rank stuck inside a CUDA
// or NCCL call cannot report itself): while requests are live and rank 0 launches no step for the group's
// timeout, the group is stuck, and the rank that finished the fewest steps is named.
import type { GroupControl } from "../ipc/group_control.ts";

export interface Stall {
  rank: number;
  reason: string;
}

export class ProgressWatch {
  private seen: number;
  private since: number;

  constructor(
    private readonly control: GroupControl,
    private readonly ranks: readonly number[], // the ranks whose progress this process sees
    private readonly timeoutMs: number,
    now: number,
  ) {
    this.seen = control.stepOf(0);
    this.since = now;
  }

  /** A stall, or null while the group moves (or has nothing to do). */
  check(now: number, live: boolean): Stall | null {
    const step = this.control.stepOf(0);
    if (step !== this.seen || !live) {
      [this.seen, this.since] = [step, now];
      return null;
    }
    if (now - this.since < this.timeoutMs) return null;
    const c = this.control;
    const rank = this.ranks.reduce((a, r) => (c.stepOf(r) < c.stepOf(a) ? r : a), this.ranks[0]);
    return {
      rank,
      reason: `no progress for ${(this.timeoutMs / 1000).toFixed(1)} s: rank ${rank} finished ${c.stepOf(rank)} steps, ` +
        `rank 0 launched ${step} (a rank stuck in a GPU call or collective)`,
    };
  }
}
