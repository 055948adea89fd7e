// `--attn prefill,decode`: parsing, the serve flag's errors, and the CPU backend refusing any variant but auto
// (its library has one kernel of each kind). The CUDA variants are compared with the CPU ops in
// test/gpu/attention.test.ts.
import { describe, expect, test } from "bun:test";
import { parseAttentionKernels, useAttentionKernels } from "../src/backend/attention_kernels.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { FlagError, serveOptions } from "../src/server/flags.ts";

describe("--attn", () => {
  test("auto, or a prefill and a decode variant", () => {
    expect(parseAttentionKernels("auto")).toEqual({ prefill: "auto", decode: "auto" });
    expect(parseAttentionKernels("fa2-m64,nosplit")).toEqual({ prefill: "fa2-m64", decode: "nosplit" });
    expect(parseAttentionKernels("auto,split")).toEqual({ prefill: "auto", decode: "split" });
    expect(parseAttentionKernels("wgmma,auto")).toEqual({ prefill: "wgmma", decode: "auto" });
    for (const bad of ["fa2-m64", "split,fa2-m64", "fa2-m64,split,x", "", "fa2,split"]) expect(() => parseAttentionKernels(bad)).toThrow(/--attn must be auto or prefill,decode/);
  });

  test("serve: a bad value or a variant on the CPU is a flag error", () => {
    const serve = (attn: string) => serveOptions({ device: "cpu", attn }, [], "/m");
    expect(serve("auto").attention).toEqual({ prefill: "auto", decode: "auto" });
    expect(() => serve("nosplit")).toThrow(FlagError);
    expect(() => serve("fa2-m128,split")).toThrow(new FlagError("--attn fa2-m128,split: the CPU backend has one attention kernel of each kind (only auto)"));
  });

  test("the CPU library accepts only auto", () => {
    const cpu = new CpuBackend();
    try {
      useAttentionKernels(cpu);
      expect(() => cpu.ops.attentionVariants(1, 0)).toThrow(/CPU library has one attention kernel/);
      expect(() => useAttentionKernels(cpu, { prefill: "auto", decode: "nosplit" })).toThrow(/only auto/);
    } finally {
      cpu.close();
    }
  });
});
