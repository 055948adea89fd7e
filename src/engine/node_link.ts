// Multi-node tensor parallelism: the TCP link between node 0 (rank 0 schedules, serves HTTP) and every
// other node (followers only). Node 0 listens on --dist-init-addr; each other node connects and says its
// node rank, gets NCCL's unique id (made by rank 0) and from then on the step-plan records of its ranks,
// exactly as rank 0 wrote them into their rings; the node writes each into its local ring. A failure on
// any node (the group's GroupControl) is sent to every other node, so all ranks stop with the same error.
// The model's collectives themselves go over NCCL, not this link.
import type { Socket, TCPSocketListener } from "bun";
import { NCCL_UNIQUE_ID_BYTES } from "../backend/nccl.ts";
import { GroupControl } from "../ipc/group_control.ts";
import { SharedRing } from "../ipc/ring.ts";
import { publishNcclId, type RankGroupInit } from "./rank_group.ts";
import { isShutdownRecord } from "./step_plan.ts";

const Frame = { hello: 1, ncclId: 2, plan: 3, fail: 4 } as const;
const FAILURE_POLL_MS = 100;
const CONNECT_RETRY_MS = 500;

export interface NodeLayout {
  nnodes: number;
  nodeRank: number;
  initAddr: string; // host:port of node 0
}

/** The global ranks node `nodeRank` runs: tp / nnodes consecutive ranks. */
export function nodeRanks(tp: number, nnodes: number, nodeRank: number): number[] {
  if (!Number.isInteger(nnodes) || nnodes < 1) throw new Error(`--nnodes must be an integer ≥ 1 (got ${nnodes})`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new Error(`--node-rank must be in [0, ${nnodes}) (got ${nodeRank})`);
  if (tp % nnodes !== 0) throw new Error(`--tp ${tp} must be a multiple of --nnodes ${nnodes} (the same number of GPUs on every node)`);
  const perNode = tp / nnodes;
  return Array.from({ length: perNode }, (_, i) => nodeRank * perNode + i);
}

export function parseInitAddr(addr: string): { hostname: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(addr);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || !(port > 0 && port < 65536)) throw new Error(`--dist-init-addr must be host:port (got ${JSON.stringify(addr)})`);
  return { hostname: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

function frame(type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.byteLength, true);
  view.setUint32(4, type, true);
  out.set(payload, 8);
  return out;
}

const words = (a: Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function planFrame(rank: number, record: Int32Array): Uint8Array {
  const payload = new Int32Array(1 + record.length);
  payload[0] = rank;
  payload.set(record, 1);
  return frame(Frame.plan, words(payload));
}

function failFrame(failure: { origin: number; reason: string }): Uint8Array {
  const reason = new TextEncoder().encode(failure.reason);
  const payload = new Uint8Array(4 + reason.byteLength);
  new DataView(payload.buffer).setInt32(0, failure.origin, true);
  payload.set(reason, 4);
  return frame(Frame.fail, payload);
}

/** Splits a byte stream into frames. */
class FrameReader {
  private pending = new Uint8Array(0);

  push(chunk: Uint8Array, onFrame: (type: number, payload: Uint8Array) => void): void {
    const joined = new Uint8Array(this.pending.byteLength + chunk.byteLength);
    joined.set(this.pending);
    joined.set(chunk, this.pending.byteLength);
    let at = 0;
    while (joined.byteLength - at >= 8) {
      const view = new DataView(joined.buffer, at);
      const length = view.getUint32(0, true);
      if (joined.byteLength - at < 8 + length) break;
      onFrame(view.getUint32(4, true), joined.slice(at + 8, at + 8 + length));
      at += 8 + length;
    }
    this.pending = joined.slice(at);
  }
}

/** Writes frames in order, keeping what the socket could not take yet. */
class FrameWriter {
  private queue: Uint8Array[] = [];

  constructor(private readonly socket: Socket<unknown>) {}

  send(bytes: Uint8Array): void {
    this.queue.push(bytes);
    this.flush();
  }

  private ending = false;

  flush(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      const written = this.socket.write(head);
      if (written < head.byteLength) {
        this.queue[0] = head.subarray(Math.max(written, 0));
        return;
      }
      this.queue.shift();
    }
    if (this.ending) this.socket.end();
  }

  /** Closes the connection once everything queued is written. */
  end(): void {
    this.ending = true;
    this.flush();
  }
}

/** Calls `onFailure` once when this node's group fails (polled: the group's flag lives in shared memory). */
function watchFailure(control: GroupControl, onFailure: (f: { origin: number; reason: string }) => void): () => void {
  const timer = setInterval(() => {
    const f = control.failure;
    if (!f) return;
    clearInterval(timer);
    onFailure(f);
  }, FAILURE_POLL_MS);
  return () => clearInterval(timer);
}

/** Node 0: serves the other nodes of the group until `close()`. */
export class NodeLinkServer {
  private readonly writers = new Map<number, FrameWriter>();
  private readonly forwarding: Promise<void>[] = [];
  /** Ranks whose Shutdown record went out: their node may disconnect now. */
  private readonly finished = new Set<number>();
  private closing = false;

  private constructor(
    private readonly listener: TCPSocketListener<unknown>,
    private readonly stopWatching: () => void,
  ) {}

  /** Listens on `addr`; each node that connects gets the NCCL id (once rank 0 wrote it) and its ranks' plans. */
  static start(group: RankGroupInit, layout: NodeLayout, tp: number): NodeLinkServer {
    const control = GroupControl.attach(group.control);
    const { hostname, port } = parseInitAddr(layout.initAddr);
    const readers = new Map<Socket<unknown>, FrameReader>();
    const nodeOf = new Map<Socket<unknown>, number>();
    let server: NodeLinkServer | null = null;
    const onFrame = (socket: Socket<unknown>, type: number, payload: Uint8Array) => {
      if (type === Frame.hello) {
        const node = new DataView(payload.buffer).getInt32(0, true);
        if (node < 1 || node >= layout.nnodes || server!.writers.has(node)) {
          control.fail(0, `node ${node} tried to join a group of ${layout.nnodes} nodes twice or out of range`);
          return;
        }
        const writer = new FrameWriter(socket);
        nodeOf.set(socket, node);
        server!.writers.set(node, writer);
        server!.forwarding.push(server!.forward(group, writer, nodeRanks(tp, layout.nnodes, node)));
      } else if (type === Frame.fail) {
        const view = new DataView(payload.buffer);
        control.fail(view.getInt32(0, true), new TextDecoder().decode(payload.subarray(4)));
      }
    };
    const listener = Bun.listen<unknown>({
      hostname, port,
      socket: {
        open: (socket) => void readers.set(socket, new FrameReader()),
        data: (socket, chunk) => readers.get(socket)!.push(chunk, (type, payload) => onFrame(socket, type, payload)),
        drain: (socket) => server!.writers.get(nodeOf.get(socket) ?? -1)?.flush(),
        close: (socket) => {
          readers.delete(socket);
          const node = nodeOf.get(socket);
          const ranks = node === undefined ? [] : nodeRanks(tp, layout.nnodes, node);
          if (node !== undefined && !ranks.every((r) => server!.finished.has(r))) {
            control.fail(ranks[0], `node ${node} disconnected from node 0`);
          }
        },
      },
    });
    const stop = watchFailure(control, (f) => {
      for (const w of server!.writers.values()) w.send(failFrame(f));
    });
    server = new NodeLinkServer(listener, stop);
    return server;
  }

  private async forward(group: RankGroupInit, writer: FrameWriter, ranks: number[]): Promise<void> {
    const state = new Int32Array(group.ncclId, 0, 1);
    while (Atomics.load(state, 0) === 0) {
      if (this.closing) return;
      await Atomics.waitAsync(state, 0, 0, 100).value;
    }
    writer.send(frame(Frame.ncclId, new Uint8Array(group.ncclId, 4, NCCL_UNIQUE_ID_BYTES).slice()));
    await Promise.all(ranks.map(async (rank) => {
      const ring = SharedRing.attach(group.planRings[rank - 1]);
      for (;;) {
        for (let record = ring.read(); record; record = ring.read()) {
          if (isShutdownRecord(record)) this.finished.add(rank);
          writer.send(planFrame(rank, record));
        }
        if (ring.closed || this.closing) return;
        await ring.waitForDataAsync(100);
      }
    }));
    writer.end();
  }

  /** Forwards what the rings still hold, then closes every connection. */
  async close(): Promise<void> {
    this.closing = true;
    this.stopWatching();
    await Promise.all(this.forwarding);
    this.listener.stop();
  }
}

/** A node other than 0: connects to node 0 (retrying until `timeoutMs`), publishes the NCCL id into the
 * local group and writes its ranks' plans into their rings. */
export async function joinNodeLink(group: RankGroupInit, layout: NodeLayout, timeoutMs: number): Promise<{ close(): void }> {
  const control = GroupControl.attach(group.control);
  const { hostname, port } = parseInitAddr(layout.initAddr);
  const reader = new FrameReader();
  const backlog = new Map<number, Int32Array[]>(); // records a full ring could not take yet
  const finished = new Set<number>(); // ranks that got their Shutdown record
  const ranks = nodeRanks(group.size, layout.nnodes, layout.nodeRank);
  let closing = false;
  const drainBacklog = () => {
    for (const [rank, records] of backlog) {
      const ring = SharedRing.attach(group.planRings[rank - 1]);
      while (records.length > 0 && ring.tryWrite(records[0])) records.shift();
      ring.notify();
      if (records.length === 0) backlog.delete(rank);
    }
    if (backlog.size > 0) setTimeout(drainBacklog, 1);
  };
  const onFrame = (type: number, payload: Uint8Array) => {
    if (type === Frame.ncclId) publishNcclId(group.ncclId, payload);
    else if (type === Frame.plan) {
      const all = new Int32Array(payload.buffer, payload.byteOffset, payload.byteLength / 4);
      const rank = all[0];
      if (isShutdownRecord(all.subarray(1))) finished.add(rank);
      const queued = backlog.get(rank);
      if (queued) queued.push(all.slice(1));
      else {
        const ring = SharedRing.attach(group.planRings[rank - 1]);
        if (!ring.tryWrite(all.subarray(1))) {
          backlog.set(rank, [all.slice(1)]);
          setTimeout(drainBacklog, 1);
        }
        ring.notify();
      }
    } else if (type === Frame.fail) {
      const view = new DataView(payload.buffer, payload.byteOffset);
      control.fail(view.getInt32(0, true), new TextDecoder().decode(payload.subarray(4)));
    }
  };
  const started = performance.now();
  let socket: Socket<unknown> | null = null;
  while (!socket) {
    try {
      socket = await Bun.connect<unknown>({
        hostname, port,
        socket: {
          data: (_, chunk) => reader.push(chunk, onFrame),
          close: () => {
            if (!closing && !ranks.every((r) => finished.has(r))) {
              control.fail(0, `node ${layout.nodeRank} lost its connection to node 0 (${layout.initAddr})`);
            }
          },
        },
      });
    } catch (e) {
      if (performance.now() - started > timeoutMs) {
        throw new Error(`cannot reach node 0 at ${layout.initAddr} within ${timeoutMs / 1000} s: ${(e as Error).message}`);
      }
      await Bun.sleep(CONNECT_RETRY_MS);
    }
  }
  const writer = new FrameWriter(socket);
  const hello = new Uint8Array(4);
  new DataView(hello.buffer).setInt32(0, layout.nodeRank, true);
  writer.send(frame(Frame.hello, hello));
  const stop = watchFailure(control, (f) => writer.send(failFrame(f)));
  return {
    close() {
      closing = true;
      stop();
      socket.end();
    },
  };
}
