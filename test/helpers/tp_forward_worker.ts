// One rank of a tensor-parallel group in a test, without the engine: loads its shard, runs one sequence
// (the prompt as one prefill with logits at every position, then decode steps along given tokens) and
// posts its full-vocabulary logits back.
import { CpuBackend } from "../../src/backend/cpu.ts";
import { joinRankGroup, type RankGroupInit } from "../../src/engine/rank_group.ts";
import { GroupControl } from "../../src/ipc/group_control.ts";
import { loadModel } from "../../src/model/load.ts";
import { SingleSequence } from "../../src/model/sequence.ts";

declare const self: Worker;

export interface ForwardJob {
  rank: number;
  group: RankGroupInit;
  modelDir: string;
  dummyWeight: boolean;
  prompt: number[];
  decode: number[];
}

self.onmessage = (e: MessageEvent<ForwardJob>) => {
  const job = e.data;
  try {
    const backend = new CpuBackend();
    const member = joinRankGroup(job.group, job.rank, backend);
    const maxSeqLen = job.prompt.length + job.decode.length;
    const { model } = loadModel(backend, {
      modelDir: job.modelDir, dummyWeight: job.dummyWeight, maxTokens: job.prompt.length, maxLogitRows: job.prompt.length, maxSeqLen,
      comm: member.comm,
    });
    const seq = new SingleSequence(backend, model, maxSeqLen);
    const rows = [...seq.feed(job.prompt, true), ...job.decode.map((t) => seq.feed([t])[0])];
    const vocab = model.config.vocabSize;
    const logits = new Float32Array(rows.length * vocab);
    rows.forEach((r, i) => logits.set(r, i * vocab));
    seq.free();
    model.free();
    member.comm.close();
    backend.close();
    postMessage({ type: "logits", logits }, [logits.buffer]);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    GroupControl.attach(job.group.control).fail(job.rank, message);
    postMessage({ type: "error", message });
  }
};
