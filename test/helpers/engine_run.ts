// Drives an Engine to completion and collects each request's tokens and ending.
import type { Engine, TokenEvent } from "../../src/engine/engine.ts";
import type { FinishReason } from "../../src/engine/request.ts";

export interface Outcome {
  tokens: number[];
  finish: FinishReason | null;
  events: TokenEvent[];
}

export function runToEnd(engine: Engine, maxSteps = 100_000, onStep?: (step: number) => void): Map<number, Outcome> {
  const out = new Map<number, Outcome>();
  const get = (uid: number) => {
    let o = out.get(uid);
    if (!o) out.set(uid, (o = { tokens: [], finish: null, events: [] }));
    return o;
  };
  for (let step = 0; engine.hasWork; step++) {
    if (step >= maxSteps) throw new Error(`engine still busy after ${maxSteps} steps`);
    onStep?.(step);
    const s = engine.step();
    for (const e of s.tokens) {
      const o = get(e.uid);
      if (o.finish) throw new Error(`request ${e.uid} got a token after it ended`);
      o.tokens.push(e.token);
      o.events.push(e);
      o.finish = e.finish;
    }
    for (const e of s.ended) {
      const o = get(e.uid);
      if (o.finish) throw new Error(`request ${e.uid} ended twice`);
      o.finish = e.reason;
    }
  }
  return out;
}

/** Every KV slot is free or held by the cache, no lock is held, no request is left. */
export function expectIdleInvariants(engine: Engine): string[] {
  const problems: string[] = [];
  const { pool, cache } = engine.kv;
  if (engine.liveRequests !== 0) problems.push(`${engine.liveRequests} requests still live`);
  if (cache.protectedSlots !== 0) problems.push(`${cache.protectedSlots} cached slots still locked`);
  if (pool.usedSlots !== cache.evictableSlots) problems.push(`pool uses ${pool.usedSlots} slots but the cache holds ${cache.evictableSlots}`);
  if (engine.kv.outstandingPages !== 0) problems.push(`${engine.kv.outstandingPages} pages still reserved`);
  return problems;
}

interface TopTwo {
  token: number;
  topLogprobs?: ArrayLike<number>;
}

/** Greedy runs agree token for token up to the first step where either run's top-2 margin is a near-tie. */
export function agreeUpToNearTies(a: readonly TopTwo[], b: readonly TopTwo[], margin: number): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const nearTie = [a[i], b[i]].some((e) => e.topLogprobs!.length > 1 && e.topLogprobs![0] - e.topLogprobs![1] < margin);
    if (nearTie) return true;
    if (a[i].token !== b[i].token) return false;
  }
  return a.length === b.length;
}
