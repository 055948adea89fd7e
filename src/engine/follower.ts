// A tensor-parallel rank other than 0: it holds its shard of the model and a KV cache of its heads, and
// runs whatever rank 0 plans, step by step: apply rank 0's page-table writes, run the forward (its
// collectives meet rank 0's), run the same sampling plan on the same all-gathered logits. It keeps the hash
// of the tokens it sampled and checks it against rank 0's when the next plan brings it.
import type { Backend } from "../backend/backend.ts";
import { KvStorage } from "../cache/kv_storage.ts";
import type { SharedRing } from "../ipc/ring.ts";
import { loadModelConfig, type ModelConfig } from "../model/config.ts";
import { DecoderModel } from "../model/decoder.ts";
import { shardLayout, type ShardLayout } from "../model/shard.ts";
import { loadWeights, type ModelWeights } from "../model/weights.ts";
import { type FaultInjection, injectFault } from "./fault_injection.ts";
import type { RankMember } from "./rank_group.ts";
import { Sampler } from "./sampler.ts";
import { decodePlan, type PlanRecord, type StepPlan, type TokenCheck, tokenHash } from "./step_plan.ts";

export interface FollowerOptions {
  modelDir: string;
  dummyWeight?: boolean;
  seed?: number; // dummy weights
}

const POLL_MS = 500; // how often a rank waiting for a plan checks whether the group failed

export class Follower {
  private readonly ownHashes = new Map<number, number>();

  private constructor(
    private readonly member: RankMember,
    private readonly ring: SharedRing,
    readonly model: DecoderModel,
    private readonly storage: KvStorage,
    private readonly sampler: Sampler,
    private readonly fault: FaultInjection | null,
  ) {}

  /** Loads the shard (while rank 0 loads its own), then builds the rest from rank 0's setup record. */
  static create(backend: Backend, member: RankMember, ring: SharedRing, o: FollowerOptions, fault: FaultInjection | null): Follower {
    const config: ModelConfig = loadModelConfig(o.modelDir);
    const shard: ShardLayout = shardLayout(config, { rank: member.comm.rank, size: member.comm.size });
    const weights: ModelWeights = loadWeights(backend, config, o.dummyWeight ? { dummySeed: o.seed ?? 0 } : { dir: o.modelDir }, shard);
    const first = Follower.next(ring, member);
    if (first.kind !== "setup") throw new Error(`rank ${member.comm.rank}: expected the setup record first, got ${first.kind}`);
    const { setup } = first;
    if (setup.kv.kvHeads !== shard.kvHeads) throw new Error(`rank 0 keeps ${setup.kv.kvHeads} KV heads per rank, this rank ${shard.kvHeads}`);
    const model = new DecoderModel(backend, config, weights, setup.limits, setup.maxPositions, { shard, comm: member.comm });
    const storage = new KvStorage(backend, setup.kv);
    const sampler = new Sampler(backend, setup.kv.rows - 1, config.vocabSize);
    return new Follower(member, ring, model, storage, sampler, fault);
  }

  /** Runs plans until rank 0 says shutdown; throws (and the group fails) on any error. */
  run(): void {
    for (;;) {
      const record = Follower.next(this.ring, this.member);
      if (record.kind === "shutdown") {
        this.verify(record.check);
        return;
      }
      if (record.kind !== "step") throw new Error(`rank ${this.member.comm.rank}: unexpected ${record.kind} record`);
      this.step(record.plan);
    }
  }

  private step(plan: StepPlan): void {
    injectFault(this.fault, this.member.comm.rank, plan.step);
    this.verify(plan.check);
    for (const w of plan.pageTable) this.storage.writePageTable(w.row, w.start, w.slots);
    const out = this.model.forward(plan.batch, this.storage, Array.from(plan.logitRows));
    if (plan.sampling) {
      const result = this.sampler.run(out.logits, plan.sampling);
      this.ownHashes.set(plan.step, tokenHash(result.tokens));
    }
  }

  private verify(check: TokenCheck | null): void {
    if (!check) return;
    const own = this.ownHashes.get(check.step);
    if (own === undefined) throw new Error(`rank ${this.member.comm.rank} has no sampled tokens of step ${check.step} to compare`);
    if (own !== check.hash) {
      throw new Error(`rank ${this.member.comm.rank} sampled different tokens than rank 0 at step ${check.step}`);
    }
    for (const step of this.ownHashes.keys()) if (step <= check.step) this.ownHashes.delete(step);
  }

  private static next(ring: SharedRing, member: RankMember): PlanRecord {
    for (;;) {
      member.control.throwIfFailed();
      const words = ring.read();
      if (words) return decodePlan(words);
      if (ring.waitForData(POLL_MS) === "closed") {
        member.control.throwIfFailed();
        throw new Error(`rank ${member.comm.rank}: rank 0 closed the plan channel`);
      }
    }
  }

  close(): void {
    this.sampler.free();
    this.storage.free();
    this.model.free();
    this.member.comm.close();
  }
}
