// A ring of pinned host memory for host → device copies that do not block the host. A region is handed
// out again only after the event recorded behind the copy that read it has completed, so a staging
// buffer is never overwritten while an async copy from it is in flight. All copies go on one stream.
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { cuda } from "./cudart.ts";

interface InFlight {
  start: number;
  end: number;
  event: number;
}

export class PinnedStaging {
  private readonly base: number;
  private readonly bytes: Uint8Array;
  private cursor = 0;
  private readonly inflight: InFlight[] = [];
  private readonly idleEvents: number[] = [];

  constructor(readonly size: number) {
    this.base = cuda.mallocHost(size);
    this.bytes = new Uint8Array(toArrayBuffer(this.base as unknown as Pointer, 0, size));
  }

  /** Copies `src` into pinned memory and enqueues its copy to `dst` on `stream`, in pieces of at most a
   * quarter of the ring (weights are uploaded through here too). */
  upload(dst: number, src: ArrayBufferView, stream: number): void {
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    const piece = this.size / 4;
    for (let done = 0; done < bytes.byteLength; done += piece) {
      const part = bytes.subarray(done, Math.min(done + piece, bytes.byteLength));
      const at = this.reserve(part.byteLength);
      this.bytes.set(part, at);
      cuda.memcpyAsync(dst + done, this.base + at, part.byteLength, 1, stream);
      const event = this.idleEvents.pop() ?? cuda.createEvent();
      cuda.record(event, stream);
      this.inflight.push({ start: at, end: at + part.byteLength, event });
    }
  }

  /** 256-byte aligned room for n bytes whose previous copies have finished. */
  private reserve(n: number): number {
    while (this.inflight.length > 64 && cuda.eventDone(this.inflight[0].event)) this.idleEvents.push(this.inflight.shift()!.event);
    let at = Math.ceil(this.cursor / 256) * 256;
    if (at + n > this.size) at = 0;
    // Copies run in stream order, so once the newest colliding copy is done, every older one is too.
    let newest = -1;
    this.inflight.forEach((r, i) => {
      if (r.start < at + n && at < r.end) newest = i;
    });
    if (newest >= 0) {
      cuda.eventSynchronize(this.inflight[newest].event);
      for (const r of this.inflight.splice(0, newest + 1)) this.idleEvents.push(r.event);
    }
    this.cursor = at + n;
    return at;
  }

  close(): void {
    for (const r of this.inflight) this.idleEvents.push(r.event);
    this.inflight.length = 0;
    for (const e of this.idleEvents) cuda.destroyEvent(e);
    cuda.freeHost(this.base);
  }
}
