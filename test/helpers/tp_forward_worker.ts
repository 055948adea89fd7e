// One rank of a tensor-parallel group in a test, without the engine: loads its shard, runs one sequence
// (the prompt as one prefill with logits at every position, then decode steps along given tokens) and
// posts its full-vocabulary logits back. Without a group it runs the whole model (TP=1).
import type { Backend } from "../../src/backend/backend.ts";
import { CpuBackend } from "../../src/backend/cpu.ts";
import { CudaBackend } from "../../src/backend/cuda.ts";
import { joinRankGroup, type RankGroupInit } from "../../src/engine/rank_group.ts";
import { GroupControl } from "../../src/ipc/group_control.ts";
import { loadModel } from "../../src/model/load.ts";
import { SingleSequence } from "../../src/model/sequence.ts";

declare const self: Worker;

export interface ForwardJob {
  device: "cpu" | "cuda"; // cuda: rank r on GPU r
  rank: number;
  group: RankGroupInit | null;
  modelDir: string;
  dummyWeight: boolean;
  prompt: number[];
  decode: number[];
}

self.onmessage = (e: MessageEvent<ForwardJob>) => {
  const job = e.data;
  try {
    const backend: Backend = job.device === "cuda" ? new CudaBackend(job.rank) : new CpuBackend();
    const member = job.group ? joinRankGroup(job.group, job.rank, backend) : null;
    const maxSeqLen = job.prompt.length + job.decode.length;
    const { model } = loadModel(backend, {
      modelDir: job.modelDir, dummyWeight: job.dummyWeight, maxTokens: job.prompt.length, maxLogitRows: job.prompt.length, maxSeqLen,
      comm: member?.comm,
    });
    const seq = new SingleSequence(backend, model, maxSeqLen);
    const rows = [...seq.feed(job.prompt, true), ...job.decode.map((t) => seq.feed([t])[0])];
    const vocab = model.config.vocabSize;
    const logits = new Float32Array(rows.length * vocab);
    rows.forEach((r, i) => logits.set(r, i * vocab));
    seq.free();
    model.free();
    member?.comm.close();
    backend.close();
    postMessage({ type: "logits", logits }, [logits.buffer]);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (job.group) GroupControl.attach(job.group.control).fail(job.rank, message);
    postMessage({ type: "error", message });
  }
};
