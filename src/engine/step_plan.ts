// The records rank 0 sends to the other ranks of a tensor-parallel group (one SharedRing per rank), so
// that every rank runs the same forward and samples the same tokens. All fields are Int32 words.
//
//   Setup    [1, maxPositions, maxTokens, maxRequests, maxLogitRows,
//             kv: layers, kvHeads, headDim, slots, rows, maxSeqLen]
//            once, before any step: the workspace limits and KV shape rank 0 chose.
//   Step     [2, step, mode (0 prefill | 1 decode), T, B, L, W, P, checkStep, checkHash,
//             sampled (0|1), rows, argmaxOnly, topK, penalties, penaltyAt, sparse, sparseAt, S,
//             inputIds[T], positions[T], outSlots[T], qoIndptr[B+1], kvLens[B], rows[B], logitRows[L],
//             W page-table writes (row, start, n, slots[n]) taking P words, sampling words[S]]
//            page-table writes are the ones rank 0 made since the previous step, applied in order before
//            the forward; logitRows are the batch rows whose logits are sampled (the sampling plan runs
//            when `sampled` is 1). checkStep/checkHash: the hash of the tokens rank 0 sampled at that
//            earlier step (checkStep −1: none); a rank whose own tokens differ stops the group.
//   Shutdown [3, checkStep, checkHash]
import type { KvShape } from "../cache/kv_storage.ts";
import type { ForwardBatch } from "../model/forward_batch.ts";
import type { WorkspaceLimits } from "../model/workspace.ts";
import { WordReader, WordWriter } from "../ipc/words.ts";
import type { SamplingPlan } from "./sampler.ts";

const Kind = { setup: 1, step: 2, shutdown: 3 } as const;
const STEP_HEADER = 19;

export interface PlanSetup {
  maxPositions: number;
  limits: WorkspaceLimits;
  kv: KvShape;
}

export interface PageTableWrite {
  row: number;
  start: number;
  slots: Int32Array;
}

/** The hash of the tokens rank 0 sampled at `step`. */
export interface TokenCheck {
  step: number;
  hash: number;
}

export interface StepPlan {
  step: number;
  batch: ForwardBatch;
  logitRows: Int32Array;
  pageTable: PageTableWrite[];
  sampling: SamplingPlan | null;
  check: TokenCheck | null;
}

export type PlanRecord =
  | { kind: "setup"; setup: PlanSetup }
  | { kind: "step"; plan: StepPlan }
  | { kind: "shutdown"; check: TokenCheck | null };

/** FNV-1a over the token ids, as an int32. */
export function tokenHash(tokens: Int32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    for (let b = 0; b < 32; b += 8) h = Math.imul(h ^ ((t >>> b) & 0xff), 0x01000193);
  }
  return h | 0;
}

export function encodeSetup(s: PlanSetup): Int32Array {
  const w = new WordWriter(11);
  w.i32(Kind.setup);
  for (const x of [s.maxPositions, s.limits.maxTokens, s.limits.maxRequests, s.limits.maxLogitRows]) w.i32(x);
  for (const x of [s.kv.layers, s.kv.kvHeads, s.kv.headDim, s.kv.slots, s.kv.rows, s.kv.maxSeqLen]) w.i32(x);
  return w.done();
}

export function encodeStep(p: StepPlan): Int32Array {
  const { batch: b, sampling: s } = p;
  const T = b.inputIds.length;
  const B = b.kvLens.length;
  const P = p.pageTable.reduce((a, x) => a + 3 + x.slots.length, 0);
  const S = s ? s.words.length : 0;
  const w = new WordWriter(STEP_HEADER + 3 * T + 3 * B + 1 + p.logitRows.length + P + S);
  w.i32(Kind.step);
  w.i32(p.step);
  w.i32(b.mode === "decode" ? 1 : 0);
  for (const x of [T, B, p.logitRows.length, p.pageTable.length, P, p.check?.step ?? -1, p.check?.hash ?? 0]) w.i32(x);
  w.i32(s ? 1 : 0);
  for (const x of [s?.rows ?? 0, s?.argmaxOnly ? 1 : 0, s?.topK ?? -1, s?.penalties ?? 0, s?.penaltyAt ?? 0, s?.sparse ?? 0,
    s?.sparseAt ?? 0, S]) w.i32(x);
  for (const a of [b.inputIds, b.positions, b.outSlots, b.qoIndptr, b.kvLens, b.rows, p.logitRows]) w.i32s(a, "plan field");
  for (const x of p.pageTable) {
    w.i32(x.row);
    w.i32(x.start);
    w.i32(x.slots.length);
    w.i32s(x.slots, "page-table slot");
  }
  if (s) w.i32s(s.words, "sampling word");
  return w.done();
}

export function encodeShutdown(check: TokenCheck | null): Int32Array {
  return Int32Array.of(Kind.shutdown, check?.step ?? -1, check?.hash ?? 0);
}

function readCheck(r: WordReader): TokenCheck | null {
  const step = r.i32();
  const hash = r.i32();
  return step < 0 ? null : { step, hash };
}

export function decodePlan(record: Int32Array): PlanRecord {
  const r = new WordReader(record);
  const kind = r.i32();
  if (kind === Kind.setup) {
    const [maxPositions, maxTokens, maxRequests, maxLogitRows] = r.i32s(4);
    const [layers, kvHeads, headDim, slots, rows, maxSeqLen] = r.i32s(6);
    r.end();
    return { kind: "setup", setup: { maxPositions, limits: { maxTokens, maxRequests, maxLogitRows }, kv: { layers, kvHeads, headDim, slots, rows, maxSeqLen } } };
  }
  if (kind === Kind.shutdown) {
    const check = readCheck(r);
    r.end();
    return { kind: "shutdown", check };
  }
  if (kind !== Kind.step) throw new Error(`step plan: unknown record kind ${kind}`);
  const step = r.i32();
  const mode = r.i32() === 1 ? "decode" : "prefill";
  const [T, B, L, W] = r.i32s(4);
  r.i32(); // P: the page-table writes' word count
  const check = readCheck(r);
  const sampled = r.i32() === 1;
  const [rows, argmaxOnly, topK, penalties, penaltyAt, sparse, sparseAt, S] = r.i32s(8);
  const batch: ForwardBatch = {
    mode, inputIds: r.i32s(T), positions: r.i32s(T), outSlots: r.i32s(T), qoIndptr: r.i32s(B + 1), kvLens: r.i32s(B), rows: r.i32s(B),
  };
  const logitRows = r.i32s(L);
  const pageTable: PageTableWrite[] = [];
  for (let i = 0; i < W; i++) {
    const row = r.i32();
    const start = r.i32();
    pageTable.push({ row, start, slots: r.i32s(r.i32()) });
  }
  const words = r.i32s(S);
  r.end();
  const sampling: SamplingPlan | null = sampled
    ? { rows, argmaxOnly: argmaxOnly === 1, topK, penalties, penaltyAt, sparse, sparseAt, words }
    : null;
  return { kind: "step", plan: { step, batch, logitRows, pageTable, sampling, check } };
}
