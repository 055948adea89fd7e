// A tensor-parallel rank other than 0: it holds its shard of the model and a KV cache of its heads, and
// runs whatever rank 0 plans: apply rank 0's page-table writes, run the same forward (its collectives meet
// rank 0's), then run the same sampling plan on the same all-gathered logits, which writes the same
// tokens into this rank's token pool (the next decode step's inputs). It hashes the tokens it sampled and
// checks them against rank 0's hashes when later records bring them.
import { type AttentionKernels, useAttentionKernels } from "../backend/attention_kernels.ts";
import type { Backend } from "../backend/backend.ts";
import { CudaBackend } from "../backend/cuda.ts";
import { KvStorage } from "../cache/kv_storage.ts";
import type { SharedRing } from "../ipc/ring.ts";
import { loadModelConfig } from "../model/config.ts";
import { DecodeGraphs, forwardStep } from "../model/decode_graphs.ts";
import { DecoderModel } from "../model/decoder.ts";
import { shardLayout } from "../model/shard.ts";
import { loadWeights } from "../model/weights.ts";
import { type FaultInjection, injectFault } from "./fault_injection.ts";
import { gatherGpuMemory, gpuMemoryBeforeWorkspace } from "./memory_plan.ts";
import type { RankMember } from "./rank_group.ts";
import { Sampler, type SampleResult } from "./sampler.ts";
import { decodePlan, type ForwardPlan, type PlanRecord, type TokenCheck, tokenHash } from "./step_plan.ts";

export interface FollowerOptions {
  modelDir: string;
  dummyWeight?: boolean;
  seed?: number; // dummy weights
  attention?: AttentionKernels; // the same variants as rank 0
}

const POLL_MS = 500; // how often a rank waiting for a plan checks whether the group failed

export class Follower {
  private readonly ownHashes = new Map<number, number>();
  /** The sampling launched last, whose tokens are hashed when the next record arrives. */
  private pending: { step: number; wait: () => SampleResult } | null = null;

  private constructor(
    private readonly member: RankMember,
    private readonly ring: SharedRing,
    readonly model: DecoderModel,
    private readonly storage: KvStorage,
    private readonly sampler: Sampler,
    private readonly graphs: DecodeGraphs | null,
    private readonly fault: FaultInjection | null,
  ) {}

  get rank(): number {
    return this.member.comm.rank;
  }

  /** Loads the shard (while rank 0 loads its own), then builds the rest from rank 0's setup record. */
  static create(backend: Backend, member: RankMember, ring: SharedRing, o: FollowerOptions, fault: FaultInjection | null): Follower {
    useAttentionKernels(backend, o.attention);
    const config = loadModelConfig(o.modelDir);
    const shard = shardLayout(config, { rank: member.comm.rank, size: member.comm.size });
    const weights = loadWeights(backend, config, o.dummyWeight ? { dummySeed: o.seed ?? 0 } : { dir: o.modelDir }, shard);
    gatherGpuMemory(backend, member.comm, gpuMemoryBeforeWorkspace(backend, 0)); // rank 0 plans the KV size from it
    const first = Follower.next(ring, member);
    if (first.kind !== "setup") throw new Error(`rank ${member.comm.rank}: expected the setup record first, got ${first.kind}`);
    const { setup } = first;
    if (setup.kv.kvHeads !== shard.kvHeads) throw new Error(`rank 0 keeps ${setup.kv.kvHeads} KV heads per rank, this rank ${shard.kvHeads}`);
    const model = new DecoderModel(backend, config, weights, setup.limits, setup.maxPositions, { shard, comm: member.comm });
    const storage = new KvStorage(backend, setup.kv);
    const sampler = new Sampler(backend, setup.kv.rows - 1, config.vocabSize, model.ws.tokenPool);
    const graphs = backend instanceof CudaBackend && setup.graphMaxBatch > 0
      ? new DecodeGraphs(backend, model, storage, setup.graphMaxBatch)
      : null;
    return new Follower(member, ring, model, storage, sampler, graphs, fault);
  }

  /** Runs plans until rank 0 says shutdown; throws (and the group fails) on any error. */
  run(): void {
    for (;;) {
      const record = Follower.next(this.ring, this.member);
      this.collect();
      if (record.kind === "shutdown") {
        this.verify(record.checks);
        return;
      }
      if (record.kind !== "forward") throw new Error(`rank ${this.rank}: unexpected ${record.kind} record`);
      this.step(record.plan);
    }
  }

  private step(plan: ForwardPlan): void {
    injectFault(this.fault, this.rank, plan.step);
    this.verify(plan.checks);
    for (const w of plan.pageTable) this.storage.writePageTable(w.row, w.start, w.slots);
    const out = forwardStep(this.model, this.storage, this.graphs, plan.batch, Array.from(plan.logitRows));
    if (plan.logitRows.length === 0) return this.member.control.markStep(this.rank, plan.step + 1);
    const record = Follower.next(this.ring, this.member);
    if (record.kind !== "sample" || record.step !== plan.step) {
      throw new Error(`rank ${this.rank}: expected the sampling plan of step ${plan.step}, got ${record.kind}`);
    }
    this.pending = { step: plan.step, wait: this.sampler.run(out.logits, record.sampling) };
    this.member.control.markStep(this.rank, plan.step + 1);
  }

  private collect(): void {
    if (!this.pending) return;
    this.ownHashes.set(this.pending.step, tokenHash(this.pending.wait().tokens));
    this.pending = null;
  }

  private verify(checks: TokenCheck[]): void {
    for (const check of checks) {
      const own = this.ownHashes.get(check.step);
      if (own === undefined) throw new Error(`rank ${this.rank} has no sampled tokens of step ${check.step} to compare`);
      if (own !== check.hash) throw new Error(`rank ${this.rank} sampled different tokens than rank 0 at step ${check.step}`);
      this.ownHashes.delete(check.step);
    }
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
    this.collect();
    this.sampler.free();
    this.graphs?.close();
    this.storage.free();
    this.model.free();
    this.member.comm.close();
  }
}
