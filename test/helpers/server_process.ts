// Starts a real `bun run serve` process on 127.0.0.1 (port 0) and waits for its "serving on" line.
import { join } from "node:path";

export interface ServerProcess {
  url: string;
  proc: ReturnType<typeof Bun.spawn>;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/** The server suite runs on the CPU; MINISGL_TEST_DEVICE=cuda runs the same suite on the GPU (test/gpu/run.sh). */
export const SERVER_TEST_DEVICE = process.env.MINISGL_TEST_DEVICE ?? "cpu";

export async function startServe(args: string[], env: Record<string, string> = {}, device = SERVER_TEST_DEVICE): Promise<ServerProcess> {
  const proc = Bun.spawn(["bun", join(import.meta.dir, "../../src/cli.ts"), "serve", "--port", "0", "--device", device,
    // Several servers share the GPU during the suite: a fixed KV size instead of a share of its memory.
    ...(device === "cuda" ? ["--num-pages", "65536"] : []), ...args], {
    stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env },
  });
  let text = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  pump(proc.stdout as ReadableStream<Uint8Array>);
  pump(proc.stderr as ReadableStream<Uint8Array>);
  const deadline = Date.now() + 30_000;
  while (!/serving on (http:\/\/\S+)/.test(text)) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${text}`);
    await Bun.sleep(50);
  }
  const url = /serving on (http:\/\/\S+)/.exec(text)![1];
  return {
    url, proc, output: () => text,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      return proc.exited;
    },
  };
}
