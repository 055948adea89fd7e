// Multi-node tensor parallelism on one two-GPU machine: two `serve` processes, each seeing one GPU
// (CUDA_VISIBLE_DEVICES), linked by --nnodes 2 --node-rank 0|1 --dist-init-addr, answer with the same
// greedy tokens as --tp 2 in one process; stopping node 0 ends node 1 cleanly.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { fixtureDir } from "../helpers/reference.ts";
import { startServe } from "../helpers/server_process.ts";
import { describeGpus } from "./gpu.ts";

async function complete(url: string, prompt: number[]): Promise<{ text: string; tokens: string[] }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: 24, temperature: 0, ignore_eos: true, logprobs: 1 }),
  });
  expect(r.status).toBe(200);
  const body = await r.json() as { choices: { text: string; logprobs: { tokens: string[] } }[] };
  return { text: body.choices[0].text, tokens: body.choices[0].logprobs.tokens };
}

describeGpus("multi-node: two processes with --nnodes 2", 2, (device) => {
  if (device === "cpu") {
    test.skip("needs NCCL between processes (cuda only)", () => {});
    return;
  }
  test("node 0 + node 1 answer like --tp 2 in one process; node 1 exits 0 after node 0 stops", async () => {
    const model = await fixtureDir("tiny-qwen3");
    const prompts = [[1, 2, 3, 4, 5], Array.from({ length: 300 }, (_, i) => (i * 7919) % 150000)];
    const single = await startServe(["--model", model, "--tp", "2"], {}, "cuda");
    const expected = [];
    try {
      for (const p of prompts) expected.push(await complete(single.url, p));
    } finally {
      expect(await single.stop()).toBe(0);
    }
    const initAddr = `127.0.0.1:${29500 + Math.floor(Math.random() * 1000)}`;
    const nodeFlags = ["--model", model, "--tp", "2", "--nnodes", "2", "--dist-init-addr", initAddr];
    const node1 = Bun.spawn(["bun", join(import.meta.dir, "../../src/cli.ts"), "serve", "--device", "cuda", "--num-pages", "65536",
      ...nodeFlags, "--node-rank", "1"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, CUDA_VISIBLE_DEVICES: "1" } });
    const node0 = await startServe([...nodeFlags, "--node-rank", "0"], { CUDA_VISIBLE_DEVICES: "0" }, "cuda");
    try {
      for (const [i, p] of prompts.entries()) expect(await complete(node0.url, p)).toEqual(expected[i]);
      expect(node0.output()).toContain("× 2 tensor-parallel ranks on 2 nodes");
    } finally {
      expect(await node0.stop()).toBe(0);
      const code = await Promise.race([node1.exited, Bun.sleep(20_000).then(() => "still running")]);
      if (code !== 0) console.log(await new Response(node1.stderr as ReadableStream).text());
      node1.kill();
      expect(code).toBe(0);
    }
  }, 120_000);
});
