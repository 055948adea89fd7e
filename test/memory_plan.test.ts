// The KV-cache size plan: the memory-ratio share of the GPU minus what is in use, and under tensor
// parallelism the rank with the least room deciding; every rank's memory exchanged by one all-gather.
import { expect, test } from "bun:test";
import type { DevicePtr } from "../src/backend/backend.ts";
import type { Communicator } from "../src/backend/communicator.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { gatherGpuMemory, planKvSlots } from "../src/engine/memory_plan.ts";

const GIB = 2 ** 30, MIB = 2 ** 20;
const shape = { layers: 1, kvHeads: 1, headDim: 64, rows: 1, maxSeqLen: 1024 }; // 256 B per token, 4 KiB of page table

test("one GPU: the ratio's share minus what is in use, the page table and the 512 MiB reserve", () => {
  const lines: string[] = [];
  const tokens = planKvSlots(shape, 0.5, 0, [{ total: 10 * GIB, free: 6 * GIB }], (l) => lines.push(l));
  expect(tokens).toBe((0.5 * GIB - 4096) / 256 - 1); // 5 GiB − 4 GiB in use − page table − reserve; one padding slot
  expect(lines.join("\n")).not.toContain("rank");
  // The workspace every rank allocates after measuring counts as in use.
  expect(planKvSlots(shape, 0.5, 256 * MIB, [{ total: 10 * GIB, free: 6 * GIB }], () => {})).toBe((0.25 * GIB - 4096) / 256 - 1);
});

test("tensor parallelism: the GPU with the least room decides, and the log and the error name its rank", () => {
  const roomy = { total: 80 * GIB, free: 60 * GIB }, busy = { total: 80 * GIB, free: 50 * GIB };
  const lines: string[] = [];
  const tokens = planKvSlots(shape, 0.9, GIB, [roomy, busy], (l) => lines.push(l));
  expect(tokens).toBe(planKvSlots(shape, 0.9, GIB, [busy], () => {}));
  expect(tokens).toBeLessThan(planKvSlots(shape, 0.9, GIB, [roomy], () => {}));
  expect(lines.join("\n")).toContain("rank 1's GPU");
  const full = { total: 80 * GIB, free: 8 * GIB };
  expect(() => planKvSlots(shape, 0.9, GIB, [roomy, roomy, full], () => {})).toThrow(/not enough GPU memory for the KV cache on rank 2's GPU/);
});

test("gatherGpuMemory sends whole MiB through the communicator's all-gather and reads every rank's back in order", () => {
  const backend = new CpuBackend();
  const other = Float32Array.of(81_559, 70_000); // rank 1's total and free, in MiB
  const calls: number[] = [];
  const comm: Communicator = {
    rank: 0, size: 2,
    allReduceSum: () => { throw new Error("not used"); },
    allGather(recv: DevicePtr, send: DevicePtr, count: number) {
      calls.push(count);
      const mine = new Float32Array(count);
      backend.download(mine, send);
      backend.upload(recv, mine);
      backend.upload(recv + count * 4, other);
    },
    close: () => {},
    abort: () => {},
  };
  const before = backend.allocatedBytes;
  const gpus = gatherGpuMemory(backend, comm, { total: 80 * GIB, free: 60 * GIB + 123_456 });
  expect(calls).toEqual([2]);
  expect(gpus).toEqual([{ total: 80 * GIB, free: 60 * GIB }, { total: 81_559 * MIB, free: 70_000 * MIB }]);
  expect(backend.allocatedBytes).toBe(before); // its two buffers are freed
  backend.close();
});
