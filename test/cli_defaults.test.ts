// What serve and shell do without flags: --device auto, and the embedded default model's directory check.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultModelDir, DEFAULT_MODEL_DIR } from "../src/default_model.ts";
import { selectDevice } from "../src/device_select.ts";

describe("--device auto", () => {
  test("cuda when the probe finds nothing wrong", () => {
    expect(selectDevice("auto", () => null)).toEqual({ device: "cuda", note: null });
  });

  test("cpu without a note when there is no GPU or no CUDA runtime", () => {
    expect(selectDevice("auto", () => "no CUDA device found")).toEqual({ device: "cpu", note: null });
    const noRuntime = "Failed to open library \"libcudart.so.13\": libcudart.so.13: cannot open shared object file: No such file or directory";
    expect(selectDevice("auto", () => noRuntime)).toEqual({ device: "cpu", note: null });
  });

  test("cpu with a note naming the fix when a GPU is there but our library is not usable", () => {
    const stale = "native library build/libmsgl_cuda.so not found: run `bun run build` (it also runs on `bun install`)";
    const { device, note } = selectDevice("auto", () => stale);
    expect(device).toBe("cpu");
    expect(note).toContain("bun run build");
  });

  test("an explicit device is taken as given, without probing", () => {
    const probe = () => {
      throw new Error("must not probe");
    };
    expect(selectDevice("cpu", probe)).toEqual({ device: "cpu", note: null });
    expect(selectDevice("cuda", probe)).toEqual({ device: "cuda", note: null });
  });

  test("the real probe answers on this machine", () => {
    const { device } = selectDevice("auto");
    const gpu = Bun.which("nvidia-smi") !== null && Bun.spawnSync(["nvidia-smi", "-L"]).exitCode === 0;
    if (!gpu) expect(device).toBe("cpu");
    else expect(["cpu", "cuda"]).toContain(device);
  });

  test("shell rejects an unknown device naming the choices", () => {
    const p = Bun.spawnSync(["bun", "src/cli.ts", "shell", "--model", "test/fixtures/tiny-qwen3", "--device", "tpu"], { stdin: "ignore" });
    expect(p.exitCode).toBe(1);
    expect(p.stderr.toString()).toContain("--device must be one of auto, cpu, cuda");
  });
});

describe("default model directory", () => {
  test("models/default under the project root", () => {
    expect(DEFAULT_MODEL_DIR.endsWith(join("models", "default"))).toBe(true);
  });

  test("an incomplete directory is refused with what is missing and what to do", () => {
    const dir = mkdtempSync(join(tmpdir(), "minisgl-default-"));
    writeFileSync(join(dir, "config.json"), "{}");
    expect(() => defaultModelDir(dir)).toThrow(/lacks model\.safetensors, tokenizer\.json, tokenizer_config\.json: pass --model/);
    for (const f of ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(dir, f), "");
    expect(defaultModelDir(dir)).toBe(dir);
  });
});
