// The real `bun run shell` driven through stdin: turns keep history, /reset clears it, /exit and EOF quit.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { fixtureDir } from "./helpers/reference.ts";

async function shell(input: string): Promise<{ replies: string[]; code: number }> {
  const proc = Bun.spawn(["bun", join(import.meta.dir, "../src/cli.ts"), "shell", "--model", await fixtureDir("tiny-qwen3")], {
    stdin: new TextEncoder().encode(input), stdout: "pipe", stderr: "pipe",
    env: { ...process.env, MINISGL_SHELL_TEMPERATURE: "0", MINISGL_SHELL_MAX_TOKENS: "6" },
  });
  const out = await new Response(proc.stdout).text();
  const code = await proc.exited;
  // After the banner, each reply ends with a new "\n> " prompt; the output ends with a final newline.
  const replies = out.split("\n> ").slice(1, -1);
  return { replies, code };
}

test("two turns, /reset, /exit", async () => {
  const { replies, code } = await shell("Hello\nHow are you?\n/reset\nHow are you?\n/exit\nnever read\n");
  expect(code).toBe(0);
  expect(replies.length).toBe(4);
  expect(replies[2]).toBe("(history cleared)");
  // With history, the second turn's reply differs from the same question asked fresh after /reset.
  const fresh = await shell("How are you?\n");
  expect(fresh.replies[0]).toBe(replies[3]);
  expect(replies[1]).not.toBe(replies[3]);
}, 60_000);

test("Ctrl-D (end of input) quits cleanly", async () => {
  const { code, replies } = await shell("Hi\n");
  expect(code).toBe(0);
  expect(replies.length).toBe(1);
}, 60_000);
