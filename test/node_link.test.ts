// The multi-node link (src/engine/node_link.ts) over localhost TCP, both ends in this process: NCCL's unique
// id and the step plans of node 1's ranks reach node 1's rings intact and in order (records larger than a
// socket buffer included), a failure on either node fails the other, and a node that disconnects before
// its shutdown record fails the group. The serve flags that lay out nodes are validated.
import { describe, expect, test } from "bun:test";
import { NCCL_UNIQUE_ID_BYTES } from "../src/backend/nccl.ts";
import { joinNodeLink, NodeLinkServer, nodeRanks, parseInitAddr } from "../src/engine/node_link.ts";
import { createRankGroup, publishNcclId, type RankGroupInit } from "../src/engine/rank_group.ts";
import { encodeShutdown } from "../src/engine/step_plan.ts";
import { GroupControl } from "../src/ipc/group_control.ts";
import { SharedRing } from "../src/ipc/ring.ts";
import { FlagError, serveOptions } from "../src/server/flags.ts";

let nextPort = 20000 + Math.floor(Math.random() * 20000);

async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Node 0 and node 1 of a tp-2 group (one rank each), linked. */
async function linkedPair() {
  const initAddr = `127.0.0.1:${nextPort++}`;
  const node0 = createRankGroup(2, { fault: null, timeoutMs: 5000 });
  const node1 = createRankGroup(2, { fault: null, timeoutMs: 5000 });
  const server = NodeLinkServer.start(node0, { nnodes: 2, nodeRank: 0, initAddr }, 2);
  const remote = await joinNodeLink(node1, { nnodes: 2, nodeRank: 1, initAddr }, 5000);
  return { node0, node1, server, remote };
}

const idState = (g: RankGroupInit) => Atomics.load(new Int32Array(g.ncclId, 0, 1), 0);

describe("node layout", () => {
  test("ranks per node, addresses and the serve flags", () => {
    expect(nodeRanks(4, 2, 0)).toEqual([0, 1]);
    expect(nodeRanks(4, 2, 1)).toEqual([2, 3]);
    expect(() => nodeRanks(3, 2, 0)).toThrow("--tp 3 must be a multiple of --nnodes 2");
    expect(() => nodeRanks(2, 2, 2)).toThrow("--node-rank must be in [0, 2)");
    expect(parseInitAddr("10.0.0.1:29500")).toEqual({ hostname: "10.0.0.1", port: 29500 });
    expect(parseInitAddr("[::1]:80")).toEqual({ hostname: "::1", port: 80 });
    expect(() => parseInitAddr("host")).toThrow("--dist-init-addr must be host:port");
    const flags = (f: Record<string, unknown>) => () => serveOptions({ device: "cpu", ...f }, [], "/m");
    expect(flags({ nnodes: 2, tp: 2 })).toThrow(new FlagError("--nnodes > 1 needs --dist-init-addr host:port (node 0's address)"));
    expect(() => serveOptions({ device: "cpu", nnodes: 2, tp: 2 }, ["--dist-init-addr", "h:1"], "/m"))
      .toThrow("--nnodes > 1 needs --device cuda");
    expect(() => serveOptions({ device: "cpu", nnodes: 2, tp: 3 }, ["--dist-init-addr", "h:1"], "/m")).toThrow("must be a multiple");
    expect(serveOptions({ device: "cpu" }, [], "/m").nodes).toBeUndefined();
  });
});

describe("node link", () => {
  test("the NCCL id and node 1's plans arrive intact and in order; shutdown lets node 1 leave", async () => {
    const { node0, node1, server, remote } = await linkedPair();
    const id = Uint8Array.from({ length: NCCL_UNIQUE_ID_BYTES }, (_, i) => (i * 37) & 0xff);
    publishNcclId(node0.ncclId, id);
    await until(() => idState(node1) === 1, "the id on node 1");
    expect(Array.from(new Uint8Array(node1.ncclId, 4, NCCL_UNIQUE_ID_BYTES))).toEqual(Array.from(id));

    const sent = [Int32Array.of(2, 1, 2, 3), Int32Array.from({ length: 1_500_000 }, (_, i) => i ^ 0x5a5a), Int32Array.of(3, 9)];
    const source = SharedRing.attach(node0.planRings[0]);
    const target = SharedRing.attach(node1.planRings[0]);
    const received: Int32Array[] = [];
    for (const record of [...sent, encodeShutdown([])]) {
      while (!source.tryWrite(record)) await Bun.sleep(1); // the big record waits until node 0 forwarded the others
      source.notify();
      await until(() => {
        for (let r = target.read(); r; r = target.read()) received.push(r);
        return received.length > 0 && received[received.length - 1].length === record.length;
      }, `record of ${record.length} words`);
    }
    expect(received.slice(0, 3)).toEqual(sent);
    remote.close(); // after its shutdown record: not a failure
    await server.close();
    await Bun.sleep(50);
    expect(GroupControl.attach(node0.control).failure).toBeNull();
    expect(GroupControl.attach(node1.control).failure).toBeNull();
  });

  test("a failure on either node fails the other with the same origin and reason", async () => {
    for (const failing of [0, 1] as const) {
      const { node0, node1, server, remote } = await linkedPair();
      const [here, there] = failing === 0 ? [node0, node1] : [node1, node0];
      GroupControl.attach(here.control).fail(failing, `boom on node ${failing}`);
      await until(() => GroupControl.attach(there.control).failure !== null, "the failure on the other node");
      const f = GroupControl.attach(there.control).failure!;
      expect([f.origin, f.reason]).toEqual([failing, `boom on node ${failing}`]);
      remote.close();
      await server.close();
    }
  });

  test("node 1 disconnecting before its shutdown fails the group; node 1 not reaching node 0 is a clear error", async () => {
    const { node0, server, remote } = await linkedPair();
    remote.close();
    await until(() => GroupControl.attach(node0.control).failure !== null, "the failure on node 0");
    expect(GroupControl.attach(node0.control).failure!.message).toBe("tensor-parallel rank 1 failed: node 1 disconnected from node 0");
    await server.close();
    const lonely = createRankGroup(2, { fault: null });
    await expect(joinNodeLink(lonely, { nnodes: 2, nodeRank: 1, initAddr: `127.0.0.1:${nextPort++}` }, 600))
      .rejects.toThrow(/cannot reach node 0 at 127\.0\.0\.1:\d+ within 0\.6 s/);
  });
});
