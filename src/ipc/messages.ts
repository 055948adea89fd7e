// Binary layouts of the records that cross threads. Every record starts with a kind word; all other
// fields are Int32 words (uids and seeds as uint32 bit patterns, floats as f32 bit patterns, strings as a
// byte-length word followed by UTF-8 bytes padded to whole words).
//
// Float sampling parameters, logit biases and logprobs travel as f32: a decoded value equals
// Math.fround of the encoded one. Everything else round-trips exactly.
//
// Request ring (main → rank 0):
//   NewRequest  [1, uid, flags, seed, maxTokens, topK, minTokens, n, topLogprobs,
//                temperature, topP, minP, presencePenalty, frequencyPenalty, repetitionPenalty   (f32)
//                P, S, B, K, promptIds[P], stopTokenIds[S], (tokenId, bias f32)[B], stop strings[K]]
//               flags: bit0 has seed, bit1 ignoreEos, bit2 logprobs, bit3 skipSpecialTokens
//   Abort       [2, uid]        Flush [3, uid]        Shutdown [4]
// Result ring (rank 0 → main):
//   StepResults [16, running, queued, kvUsed, kvTotal, cacheHitTokens, promptTokens, generatedTokens, E,
//                E × (uid, token, finish, cachedTokens, logprob f32, T, (topId, topLogprob f32)[T])]
//   RequestError [17, uid, message]      FlushDone [18, uid, ok 0|1]

import type { SamplingParams } from "../engine/sampling_params.ts";
import { bytesWords, utf8, WordReader, WordWriter } from "./words.ts";

export const RecordKind = {
  newRequest: 1,
  abort: 2,
  flush: 3,
  shutdown: 4,
  stepResults: 16,
  requestError: 17,
  flushDone: 18,
} as const;

export const Finish = { none: 0, stop: 1, length: 2, abort: 3, error: 4 } as const;
export type FinishCode = (typeof Finish)[keyof typeof Finish];

export interface NewRequest {
  kind: "newRequest";
  uid: number;
  promptIds: Int32Array | number[]; // decoded as Int32Array
  params: SamplingParams;
}
export interface Abort {
  kind: "abort";
  uid: number;
}
/** Asks the engine to flush its prefix cache; answered by FlushDone with the same uid. */
export interface Flush {
  kind: "flush";
  uid: number;
}
export interface Shutdown {
  kind: "shutdown";
}
export type RequestMessage = NewRequest | Abort | Flush | Shutdown;

export interface StepStats {
  running: number;
  queued: number;
  kvUsed: number;
  kvTotal: number;
  cacheHitTokens: number;
  promptTokens: number;
  generatedTokens: number;
}
export interface TokenResult {
  uid: number;
  token: number; // -1 when the entry carries no token (abort, error)
  finish: FinishCode;
  cachedTokens: number; // prompt tokens served from the prefix cache; meaningful on the first token only
  logprob: number; // NaN when not requested
  topIds: ArrayLike<number>; // decoded as number[]
  topLogprobs: ArrayLike<number>; // decoded as number[], same length as topIds
}
export interface StepResults {
  kind: "stepResults";
  stats: StepStats;
  results: TokenResult[];
}
/** A request the engine rejected (e.g. too long for the KV pool); it gets no other reply. */
export interface RequestError {
  kind: "requestError";
  uid: number;
  message: string;
}
export interface FlushDone {
  kind: "flushDone";
  uid: number;
  ok: boolean;
}
export type ResultMessage = StepResults | RequestError | FlushDone;
export type Message = RequestMessage | ResultMessage;

const NEW_REQUEST_FIXED = 19;
const FLAG_SEED = 1;
const FLAG_IGNORE_EOS = 2;
const FLAG_LOGPROBS = 4;
const FLAG_SKIP_SPECIAL = 8;
const STATS_WORDS = 8; // kind + 7 statistics
const ENTRY_FIXED = 6;

export function encodeNewRequest(uid: number, promptIds: Int32Array | readonly number[], p: SamplingParams): Int32Array {
  const stops = p.stop.map(utf8);
  const bias = Object.entries(p.logitBias);
  const words =
    NEW_REQUEST_FIXED + promptIds.length + p.stopTokenIds.length + 2 * bias.length + stops.reduce((s, b) => s + bytesWords(b), 0);
  const w = new WordWriter(words);
  w.i32(RecordKind.newRequest);
  w.u32(uid, "uid");
  const flags =
    (p.seed !== null ? FLAG_SEED : 0) |
    (p.ignoreEos ? FLAG_IGNORE_EOS : 0) |
    (p.logprobs ? FLAG_LOGPROBS : 0) |
    (p.skipSpecialTokens ? FLAG_SKIP_SPECIAL : 0);
  w.i32(flags);
  w.u32(p.seed ?? 0, "seed");
  w.i32(p.maxTokens, "maxTokens");
  w.i32(p.topK, "topK");
  w.i32(p.minTokens, "minTokens");
  w.i32(p.n, "n");
  w.i32(p.topLogprobs, "topLogprobs");
  for (const x of [p.temperature, p.topP, p.minP, p.presencePenalty, p.frequencyPenalty, p.repetitionPenalty]) w.f32(x);
  w.i32(promptIds.length);
  w.i32(p.stopTokenIds.length);
  w.i32(bias.length);
  w.i32(stops.length);
  w.i32s(promptIds, "promptIds");
  w.i32s(p.stopTokenIds, "stopTokenIds");
  for (const [id, b] of bias) {
    w.i32(Number(id), "logitBias token id");
    w.f32(b);
  }
  for (const s of stops) w.bytes(s);
  return w.done();
}

export function encodeAbort(uid: number): Int32Array {
  return uidRecord(RecordKind.abort, uid);
}

export function encodeFlush(uid: number): Int32Array {
  return uidRecord(RecordKind.flush, uid);
}

export function encodeShutdown(): Int32Array {
  return Int32Array.of(RecordKind.shutdown);
}

export function encodeStepResults(stats: StepStats, results: readonly TokenResult[]): Int32Array {
  let words = STATS_WORDS + 1;
  for (const r of results) {
    if (r.topIds.length !== r.topLogprobs.length) throw new RangeError(`uid ${r.uid}: topIds and topLogprobs differ in length`);
    words += ENTRY_FIXED + 2 * r.topIds.length;
  }
  const w = new WordWriter(words);
  w.i32(RecordKind.stepResults);
  w.i32(stats.running, "running");
  w.i32(stats.queued, "queued");
  w.i32(stats.kvUsed, "kvUsed");
  w.i32(stats.kvTotal, "kvTotal");
  w.i32(stats.cacheHitTokens, "cacheHitTokens");
  w.i32(stats.promptTokens, "promptTokens");
  w.i32(stats.generatedTokens, "generatedTokens");
  w.i32(results.length);
  for (const r of results) {
    w.u32(r.uid, "uid");
    w.i32(r.token, "token");
    w.i32(r.finish, "finish");
    w.i32(r.cachedTokens, "cachedTokens");
    w.f32(r.logprob);
    w.i32(r.topIds.length);
    for (let i = 0; i < r.topIds.length; i++) {
      w.i32(r.topIds[i], "top id");
      w.f32(r.topLogprobs[i]);
    }
  }
  return w.done();
}

export function encodeRequestError(uid: number, message: string): Int32Array {
  const bytes = utf8(message);
  const w = new WordWriter(2 + bytesWords(bytes));
  w.i32(RecordKind.requestError);
  w.u32(uid, "uid");
  w.bytes(bytes);
  return w.done();
}

export function encodeFlushDone(uid: number, ok: boolean): Int32Array {
  const w = new WordWriter(3);
  w.i32(RecordKind.flushDone);
  w.u32(uid, "uid");
  w.i32(ok ? 1 : 0);
  return w.done();
}

export function encodeMessage(m: Message): Int32Array {
  switch (m.kind) {
    case "newRequest":
      return encodeNewRequest(m.uid, m.promptIds, m.params);
    case "abort":
      return encodeAbort(m.uid);
    case "flush":
      return encodeFlush(m.uid);
    case "shutdown":
      return encodeShutdown();
    case "stepResults":
      return encodeStepResults(m.stats, m.results);
    case "requestError":
      return encodeRequestError(m.uid, m.message);
    case "flushDone":
      return encodeFlushDone(m.uid, m.ok);
  }
}

export function decodeRecord(words: Int32Array): Message {
  const r = new WordReader(words);
  const kind = r.i32();
  let m: Message;
  switch (kind) {
    case RecordKind.newRequest:
      m = decodeNewRequest(r);
      break;
    case RecordKind.abort:
      m = { kind: "abort", uid: r.u32() };
      break;
    case RecordKind.flush:
      m = { kind: "flush", uid: r.u32() };
      break;
    case RecordKind.shutdown:
      m = { kind: "shutdown" };
      break;
    case RecordKind.stepResults:
      m = decodeStepResults(r);
      break;
    case RecordKind.requestError:
      m = { kind: "requestError", uid: r.u32(), message: r.string() };
      break;
    case RecordKind.flushDone:
      m = { kind: "flushDone", uid: r.u32(), ok: r.i32() !== 0 };
      break;
    default:
      throw new Error(`unknown record kind ${kind}`);
  }
  r.end();
  return m;
}

/** decodeRecord for the engine side: throws on a result record. */
export function decodeRequest(words: Int32Array): RequestMessage {
  const m = decodeRecord(words);
  if (isResult(m)) throw new Error(`${m.kind} on the request ring`);
  return m;
}

/** decodeRecord for the main thread: throws on a request record. */
export function decodeResult(words: Int32Array): ResultMessage {
  const m = decodeRecord(words);
  if (!isResult(m)) throw new Error(`${m.kind} on the result ring`);
  return m;
}

function isResult(m: Message): m is ResultMessage {
  return m.kind === "stepResults" || m.kind === "requestError" || m.kind === "flushDone";
}

function uidRecord(kind: number, uid: number): Int32Array {
  const w = new WordWriter(2);
  w.i32(kind);
  w.u32(uid, "uid");
  return w.done();
}

function decodeNewRequest(r: WordReader): NewRequest {
  const uid = r.u32();
  const flags = r.i32();
  const seed = r.u32();
  const maxTokens = r.i32();
  const topK = r.i32();
  const minTokens = r.i32();
  const n = r.i32();
  const topLogprobs = r.i32();
  const temperature = r.f32();
  const topP = r.f32();
  const minP = r.f32();
  const presencePenalty = r.f32();
  const frequencyPenalty = r.f32();
  const repetitionPenalty = r.f32();
  const [promptLen, stopIdsLen, biasLen, stopLen] = [r.i32(), r.i32(), r.i32(), r.i32()];
  const promptIds = r.i32s(promptLen);
  const stopTokenIds = Array.from(r.i32s(stopIdsLen));
  const logitBias: Record<number, number> = {};
  for (let i = 0; i < biasLen; i++) logitBias[r.i32()] = r.f32();
  const stop: string[] = [];
  for (let i = 0; i < stopLen; i++) stop.push(r.string());
  const params: SamplingParams = {
    maxTokens,
    temperature,
    topK,
    topP,
    minP,
    seed: flags & FLAG_SEED ? seed : null,
    stop,
    stopTokenIds,
    ignoreEos: (flags & FLAG_IGNORE_EOS) !== 0,
    presencePenalty,
    frequencyPenalty,
    repetitionPenalty,
    logitBias,
    minTokens,
    n,
    logprobs: (flags & FLAG_LOGPROBS) !== 0,
    topLogprobs,
    skipSpecialTokens: (flags & FLAG_SKIP_SPECIAL) !== 0,
  };
  return { kind: "newRequest", uid, promptIds, params };
}

function decodeStepResults(r: WordReader): StepResults {
  const stats: StepStats = {
    running: r.i32(),
    queued: r.i32(),
    kvUsed: r.i32(),
    kvTotal: r.i32(),
    cacheHitTokens: r.i32(),
    promptTokens: r.i32(),
    generatedTokens: r.i32(),
  };
  const count = r.i32();
  const results: TokenResult[] = [];
  for (let e = 0; e < count; e++) {
    const uid = r.u32();
    const token = r.i32();
    const finish = r.i32();
    if (finish < Finish.none || finish > Finish.error) throw new Error(`uid ${uid}: unknown finish code ${finish}`);
    const cachedTokens = r.i32();
    const logprob = r.f32();
    const top = r.i32();
    const topIds: number[] = [];
    const topLogprobs: number[] = [];
    for (let i = 0; i < top; i++) {
      topIds.push(r.i32());
      topLogprobs.push(r.f32());
    }
    results.push({ uid, token, finish: finish as FinishCode, cachedTokens, logprob, topIds, topLogprobs });
  }
  return { kind: "stepResults", stats, results };
}
