// The records rank 0 sends to the other ranks of a tensor-parallel group (one SharedRing per rank), so
// that every rank runs the same forward and samples the same tokens. All fields are Int32 words.
//
//   Setup    [1, maxPositions, maxTokens, maxRequests, maxLogitRows, graphMaxBatch,
//             kv: layers, kvHeads, headDim, slots, rows, maxSeqLen]
//            once, before any step: the workspace limits, KV shape and CUDA graph sizes rank 0 chose.
//   Forward  [2, step, mode (0 prefill | 1 decode), idsFromPool (0|1), T, B, L, W, C,
//             inputIds[T], positions[T], outSlots[T], qoIndptr[B+1], kvLens[B], rows[B], logitRows[L],
//             W page-table writes (row, start, n, slots[n]), C checks (step, hash)]
//            sent before rank 0's forward. The page-table writes are the ones rank 0 made since the previous
//            Forward, applied in order first. logitRows are the batch rows whose logits are sampled (a
//            decode forward samples every row and takes the logits of each row's last token); when L > 0 a
//            Sample record of the same step follows. Checks: hashes of the tokens rank 0 sampled at earlier
//            steps; a rank whose own tokens of that step differ stops the group.
//   Sample   [3, step, rows, argmaxOnly, topK, penalties, penaltyAt, sparse, sparseAt, S, words[S]]
//            the sampler's plan (src/engine/sampler.ts), sent once rank 0 has built it (after its forward
//            was launched, since penalties may need the previous step's tokens).
//   Shutdown [4, C, C checks (step, hash)]
import type { KvShape } from "../cache/kv_storage.ts";
import type { ForwardBatch } from "../model/forward_batch.ts";
import type { WorkspaceLimits } from "../model/workspace.ts";
import { WordReader, WordWriter } from "../ipc/words.ts";
import type { SamplingPlan } from "./sampler.ts";

const Kind = { setup: 1, forward: 2, sample: 3, shutdown: 4 } as const;

export interface PlanSetup {
  maxPositions: number;
  limits: WorkspaceLimits;
  kv: KvShape;
  graphMaxBatch: number; // decode CUDA graphs up to this batch (0: none); every rank captures the same
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

export interface ForwardPlan {
  step: number;
  batch: ForwardBatch;
  logitRows: Int32Array;
  pageTable: PageTableWrite[];
  checks: TokenCheck[];
}

export type PlanRecord =
  | { kind: "setup"; setup: PlanSetup }
  | { kind: "forward"; plan: ForwardPlan }
  | { kind: "sample"; step: number; sampling: SamplingPlan }
  | { kind: "shutdown"; checks: TokenCheck[] };

/** FNV-1a over the token ids, as an int32. */
/** Whether a record is the last one rank 0 sends a rank (Shutdown). */
export function isShutdownRecord(record: Int32Array): boolean {
  return record[0] === Kind.shutdown;
}

export function tokenHash(tokens: Int32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    for (let b = 0; b < 32; b += 8) h = Math.imul(h ^ ((t >>> b) & 0xff), 0x01000193);
  }
  return h | 0;
}

export function encodeSetup(s: PlanSetup): Int32Array {
  const w = new WordWriter(12);
  w.i32(Kind.setup);
  for (const x of [s.maxPositions, s.limits.maxTokens, s.limits.maxRequests, s.limits.maxLogitRows, s.graphMaxBatch]) w.i32(x);
  for (const x of [s.kv.layers, s.kv.kvHeads, s.kv.headDim, s.kv.slots, s.kv.rows, s.kv.maxSeqLen]) w.i32(x);
  return w.done();
}

export function encodeForward(p: ForwardPlan): Int32Array {
  const b = p.batch;
  const T = b.inputIds.length;
  const B = b.kvLens.length;
  const P = p.pageTable.reduce((a, x) => a + 3 + x.slots.length, 0);
  const w = new WordWriter(9 + 3 * T + 3 * B + 1 + p.logitRows.length + P + 2 * p.checks.length);
  w.i32(Kind.forward);
  w.i32(p.step);
  w.i32(b.mode === "decode" ? 1 : 0);
  w.i32(b.idsFromPool ? 1 : 0);
  for (const x of [T, B, p.logitRows.length, p.pageTable.length, p.checks.length]) w.i32(x);
  for (const a of [b.inputIds, b.positions, b.outSlots, b.qoIndptr, b.kvLens, b.rows, p.logitRows]) w.i32s(a, "plan field");
  for (const x of p.pageTable) {
    w.i32(x.row);
    w.i32(x.start);
    w.i32(x.slots.length);
    w.i32s(x.slots, "page-table slot");
  }
  writeChecks(w, p.checks);
  return w.done();
}

export function encodeSample(step: number, s: SamplingPlan): Int32Array {
  const w = new WordWriter(10 + s.words.length);
  w.i32(Kind.sample);
  w.i32(step);
  for (const x of [s.rows, s.argmaxOnly ? 1 : 0, s.topK, s.penalties, s.penaltyAt, s.sparse, s.sparseAt, s.words.length]) w.i32(x);
  w.i32s(s.words, "sampling word");
  return w.done();
}

export function encodeShutdown(checks: TokenCheck[]): Int32Array {
  const w = new WordWriter(2 + 2 * checks.length);
  w.i32(Kind.shutdown);
  w.i32(checks.length);
  writeChecks(w, checks);
  return w.done();
}

function writeChecks(w: WordWriter, checks: TokenCheck[]): void {
  for (const c of checks) {
    w.i32(c.step);
    w.i32(c.hash);
  }
}

function readChecks(r: WordReader, n: number): TokenCheck[] {
  return Array.from({ length: n }, () => ({ step: r.i32(), hash: r.i32() }));
}

export function decodePlan(record: Int32Array): PlanRecord {
  const r = new WordReader(record);
  const kind = r.i32();
  let out: PlanRecord;
  if (kind === Kind.setup) {
    const [maxPositions, maxTokens, maxRequests, maxLogitRows, graphMaxBatch] = r.i32s(5);
    const [layers, kvHeads, headDim, slots, rows, maxSeqLen] = r.i32s(6);
    const limits = { maxTokens, maxRequests, maxLogitRows };
    out = { kind: "setup", setup: { maxPositions, limits, kv: { layers, kvHeads, headDim, slots, rows, maxSeqLen }, graphMaxBatch } };
  } else if (kind === Kind.forward) {
    const step = r.i32();
    const mode = r.i32() === 1 ? "decode" : "prefill";
    const idsFromPool = r.i32() === 1;
    const [T, B, L, W, C] = r.i32s(5);
    const batch: ForwardBatch = {
      mode, inputIds: r.i32s(T), positions: r.i32s(T), outSlots: r.i32s(T), qoIndptr: r.i32s(B + 1), kvLens: r.i32s(B), rows: r.i32s(B),
    };
    if (idsFromPool) batch.idsFromPool = true;
    const logitRows = r.i32s(L);
    const pageTable: PageTableWrite[] = [];
    for (let i = 0; i < W; i++) {
      const row = r.i32();
      const start = r.i32();
      pageTable.push({ row, start, slots: r.i32s(r.i32()) });
    }
    out = { kind: "forward", plan: { step, batch, logitRows, pageTable, checks: readChecks(r, C) } };
  } else if (kind === Kind.sample) {
    const step = r.i32();
    const [rows, argmaxOnly, topK, penalties, penaltyAt, sparse, sparseAt, S] = r.i32s(8);
    out = { kind: "sample", step, sampling: { rows, argmaxOnly: argmaxOnly === 1, topK, penalties, penaltyAt, sparse, sparseAt, words: r.i32s(S) } };
  } else if (kind === Kind.shutdown) {
    out = { kind: "shutdown", checks: readChecks(r, r.i32()) };
  } else {
    throw new Error(`step plan: unknown record kind ${kind}`);
  }
  r.end();
  return out;
}
