// The activation arena of one model: every buffer a forward needs, sized once for the largest batch.
import type { Backend, DevicePtr } from "../backend/backend.ts";
import type { ModelConfig } from "./config.ts";

// The KV page table's row length is the context length rounded up to a page; pages are at most this.
const PAGE_STRIDE_ROUNDING = 1024;

export interface WorkspaceLimits {
  maxTokens: number; // new tokens in one forward (the prefill chunk budget, or the largest decode batch)
  maxRequests: number; // requests in one forward
  maxLogitRows: number; // rows of logits one forward may produce (maxRequests, or maxTokens for all positions)
}

export class Workspace {
  readonly residual: DevicePtr; // [T, hidden] the running residual stream
  readonly normed: DevicePtr; // [T, hidden]
  readonly out: DevicePtr; // [T, hidden] o_proj / down_proj output
  readonly qkv: DevicePtr; // [T, qkvDim]
  readonly attn: DevicePtr; // [T, qHeads · headDim]
  readonly gateUp: DevicePtr; // [T, 2 · intermediate]
  readonly act: DevicePtr; // [T, intermediate]
  readonly gathered: DevicePtr; // [maxLogitRows, hidden]
  readonly logits: DevicePtr; // fp32 [maxLogitRows, vocab]
  // inputs
  readonly ids: DevicePtr;
  readonly positions: DevicePtr;
  readonly outSlots: DevicePtr;
  readonly qoIndptr: DevicePtr;
  readonly kvLens: DevicePtr;
  readonly rows: DevicePtr;
  readonly logitIndices: DevicePtr;
  readonly tokenPool: DevicePtr; // int32 per page-table row: the last sampled token of that row's request
  readonly decodeScratch: DevicePtr; // split-KV partial results of decode attention
  readonly decodeScratchBytes: number;
  /** The largest KV page-table stride the decode scratch is sized for. */
  readonly maxPageStride: number;
  readonly bytes: number;
  private readonly owned: DevicePtr[] = [];

  constructor(
    private readonly backend: Backend,
    c: ModelConfig,
    readonly limits: WorkspaceLimits,
    maxPositions: number,
  ) {
    const { maxTokens: t, maxRequests: r, maxLogitRows: l } = limits;
    const qkvDim = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    let bytes = 0;
    const alloc = (n: number) => {
      const p = backend.alloc(n);
      this.owned.push(p);
      bytes += n;
      return p;
    };
    this.residual = alloc(t * c.hiddenSize * 2);
    this.normed = alloc(t * c.hiddenSize * 2);
    this.out = alloc(t * c.hiddenSize * 2);
    this.qkv = alloc(t * qkvDim * 2);
    this.attn = alloc(t * c.numHeads * c.headDim * 2);
    this.gateUp = alloc(t * 2 * c.intermediateSize * 2);
    this.act = alloc(t * c.intermediateSize * 2);
    this.gathered = alloc(l * c.hiddenSize * 2);
    this.logits = alloc(l * c.vocabSize * 4);
    this.ids = alloc(t * 4);
    this.positions = alloc(t * 4);
    this.outSlots = alloc(t * 4);
    this.qoIndptr = alloc((r + 1) * 4);
    this.kvLens = alloc(r * 4);
    this.rows = alloc(r * 4);
    this.logitIndices = alloc(l * 4);
    this.tokenPool = alloc((r + 1) * 4);
    backend.fill(this.tokenPool, 0, (r + 1) * 4);
    this.maxPageStride = Math.ceil(maxPositions / PAGE_STRIDE_ROUNDING) * PAGE_STRIDE_ROUNDING;
    this.decodeScratchBytes = backend.ops.attentionDecodeWorkspace(r, c.numHeads, c.headDim, this.maxPageStride);
    this.decodeScratch = this.decodeScratchBytes > 0 ? alloc(this.decodeScratchBytes) : 0;
    this.bytes = bytes;
  }

  free(): void {
    for (const p of this.owned) this.backend.free(p);
    this.owned.length = 0;
  }
}
