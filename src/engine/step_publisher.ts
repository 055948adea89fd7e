// Rank 0's side of the step plans: records the page-table writes its scheduler makes, sends every other
// rank the plan of each forward before running it and the sampler's plan before sampling
// (src/engine/step_plan.ts), and the hashes of the tokens rank 0 sampled so the other ranks can check
// that they sampled the same ones.
import type { ForwardBatch } from "../model/forward_batch.ts";
import type { GroupControl } from "../ipc/group_control.ts";
import type { SharedRing } from "../ipc/ring.ts";
import type { SamplingPlan } from "./sampler.ts";
import { type FaultInjection, injectFault } from "./fault_injection.ts";
import {
  encodeForward, encodeSample, encodeSetup, encodeShutdown, type PageTableWrite, type PlanSetup, type TokenCheck, tokenHash,
} from "./step_plan.ts";

export class StepPublisher {
  private pageTable: PageTableWrite[] = [];
  private checks: TokenCheck[] = [];
  private step = 0;

  constructor(
    /** Ring r − 1 carries the plans of rank r. */
    private readonly rings: SharedRing[],
    private readonly control: GroupControl,
    private readonly fault: FaultInjection | null = null,
  ) {}

  setup(s: PlanSetup): void {
    this.send(encodeSetup(s));
  }

  /** Called on every page-table write rank 0 makes (the slots are copied). */
  pageTableWrite(row: number, start: number, slots: Int32Array): void {
    this.pageTable.push({ row, start, slots: slots.slice() });
  }

  /** Sends the plan of the forward rank 0 is about to run; returns its step number. */
  forward(batch: ForwardBatch, logitRows: readonly number[]): number {
    const step = this.step++;
    this.control.markStep(0, step); // steps before this one are launched
    this.send(encodeForward({ step, batch, logitRows: Int32Array.from(logitRows), pageTable: this.pageTable, checks: this.checks }));
    this.pageTable = [];
    this.checks = [];
    injectFault(this.fault, 0, step);
    return step;
  }

  /** Sends the sampling plan of the forward sent last; returns that step number. */
  sample(plan: SamplingPlan): number {
    const step = this.step - 1;
    this.send(encodeSample(step, plan));
    return step;
  }

  /** The tokens rank 0 sampled at `step` (sent with the next record). */
  sampled(step: number, tokens: Int32Array): void {
    this.checks.push({ step, hash: tokenHash(tokens) });
  }

  /** Tells the other ranks to free everything and exit. */
  shutdown(): void {
    this.send(encodeShutdown(this.checks));
    this.checks = [];
  }

  private send(record: Int32Array): void {
    for (const ring of this.rings) {
      if (record.length + 2 > ring.capacityWords) {
        throw new Error(`a step plan of ${record.length} words does not fit the plan channel (${ring.capacityWords} words)`);
      }
      // The other ranks lag by at most one step (the collectives hold everyone together): wait for room.
      for (let spins = 0; !ring.tryWrite(record); spins++) {
        this.control.throwIfFailed();
        Bun.sleepSync(spins < 100 ? 0 : 1);
      }
      ring.notify();
    }
  }
}
