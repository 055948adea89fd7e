// A node other than 0 of a multi-node group (`serve --nnodes N --node-rank K`, K ≥ 1): no HTTP and no
// scheduler; it joins node 0 over the node link (src/engine/node_link.ts), runs its ranks as followers
// (one Worker per local GPU) and returns when they end: null after node 0 shut the group down, else why
// the group failed.
import type { RankInit } from "../../workers/rank.ts";
import { GroupControl } from "../ipc/group_control.ts";
import { SharedRing } from "../ipc/ring.ts";
import { joinNodeLink, type NodeLayout, nodeRanks } from "./node_link.ts";
import { createRankGroup } from "./rank_group.ts";
import { RankWorker } from "./rank_worker.ts";

const EXIT_GRACE_MS = 10_000;

export async function runFollowerNode(engine: RankInit["engine"], tp: number, layout: NodeLayout,
  log: (line: string) => void): Promise<string | null> {
  const ranks = nodeRanks(tp, layout.nnodes, layout.nodeRank);
  if (layout.nodeRank === 0) throw new Error("node 0 runs the server, not runFollowerNode");
  const group = createRankGroup(tp, { spansNodes: true });
  const control = GroupControl.attach(group.control);
  log(`node ${layout.nodeRank} of ${layout.nnodes}: ranks ${ranks.join(", ")}; joining node 0 at ${layout.initAddr}`);
  const link = await joinNodeLink(group, layout, group.timeoutMs);
  const unused = SharedRing.create(16).buffer; // followers read plans, not requests
  const workers: RankWorker[] = [];
  let failure: string | null = null;
  for (const [gpu, rank] of ranks.entries()) {
    const w = await RankWorker.spawn({ rank, gpu, device: "cuda", requestRing: unused, resultRing: unused, engine, group });
    w.onError = (message) => (failure ??= message);
    workers.push(w);
  }
  await Promise.all(workers.map((w) => w.ready.catch((e: Error) => (failure ??= e.message))));
  log(`node ${layout.nodeRank}: ${ranks.length} rank(s) ready`);
  const exited = Promise.all(workers.map((w) => w.exited));
  // After a failure a rank may be stuck in a GPU call; don't wait for it forever.
  const failed = new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (control.failure || failure) {
        clearInterval(timer);
        setTimeout(resolve, EXIT_GRACE_MS);
      }
    }, 100);
    void exited.then(() => clearInterval(timer));
  });
  await Promise.race([exited, failed]);
  for (const w of workers) w.terminate();
  link.close();
  return failure ?? control.failure?.message ?? null;
}
