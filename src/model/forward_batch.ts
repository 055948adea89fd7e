// What one model forward computes: new tokens of a batch of requests, each over its own KV.

export interface ForwardBatch {
  /** "decode": exactly one new token per request (a faster attention path); "prefill": any number. */
  mode: "prefill" | "decode";
  inputIds: Int32Array; // [T] new tokens, requests back to back
  positions: Int32Array; // [T]
  outSlots: Int32Array; // [T] KV slot each new token's K/V is written to
  qoIndptr: Int32Array; // [B + 1] token offsets of each request
  kvLens: Int32Array; // [B] cached + new tokens per request (its page-table row holds that many slots)
  rows: Int32Array; // [B] page-table row of each request
  /** Decode only: read the input ids from the device token pool (indexed by row) that the sampler wrote,
   * instead of inputIds, so sampled tokens never round-trip through the host. */
  idsFromPool?: boolean;
}

export function validateBatch(b: ForwardBatch): void {
  const n = b.kvLens.length;
  const t = b.inputIds.length;
  if (b.positions.length !== t || b.outSlots.length !== t) throw new Error("forward batch: positions/outSlots length ≠ tokens");
  if (b.qoIndptr.length !== n + 1 || b.rows.length !== n) throw new Error("forward batch: qoIndptr/rows length mismatch");
  if (b.qoIndptr[0] !== 0 || b.qoIndptr[n] !== t) throw new Error("forward batch: qoIndptr must span [0, tokens]");
  for (let i = 0; i < n; i++) {
    const newTokens = b.qoIndptr[i + 1] - b.qoIndptr[i];
    if (newTokens < 1 || newTokens > b.kvLens[i]) throw new Error(`forward batch: request ${i} has ${newTokens} new tokens, kv ${b.kvLens[i]}`);
    if (b.mode === "decode" && newTokens !== 1) throw new Error("forward batch: decode needs one token per request");
  }
}
