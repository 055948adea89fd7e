// `bun run shell`: interactive chat in the terminal with the model's chat template, streamed replies and
// kept history. /reset clears the history; /exit or Ctrl-D quits. Sampling defaults come from
// MINISGL_SHELL_MAX_TOKENS (2048), MINISGL_SHELL_TEMPERATURE (0.6), MINISGL_SHELL_TOP_P, MINISGL_SHELL_TOP_K.
import { EngineClient } from "./engine/client.ts";
import { RequestStream } from "./engine/request_stream.ts";
import { resolveSamplingParams, type SamplingParams } from "./engine/sampling_params.ts";
import type { ChatMessage } from "./tokenizer/tokenizer.ts";
import { TextTokenizer } from "./tokenizer/tokenizer.ts";

function envNumber(name: string, fallback?: number): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number (got ${JSON.stringify(v)})`);
  return n;
}

export async function runShell(modelDir: string, device: "cpu" | "cuda", tp = 1): Promise<void> {
  const tokenizer = await TextTokenizer.load(modelDir);
  const client = await EngineClient.start(device, { modelDir, eosTokenIds: tokenizer.eosTokenIds, quiet: true, maxRunningRequests: 4 },
    { tp });
  const params: SamplingParams = resolveSamplingParams({
    maxTokens: envNumber("MINISGL_SHELL_MAX_TOKENS", 2048), temperature: envNumber("MINISGL_SHELL_TEMPERATURE", 0.6),
    topP: envNumber("MINISGL_SHELL_TOP_P"), topK: envNumber("MINISGL_SHELL_TOP_K"),
  }, client.info.defaults as SamplingParams, client.info.vocabSize);
  const history: ChatMessage[] = [];
  let uid = 1;
  const out = process.stdout;
  out.write(`minisgl shell — ${modelDir} on ${device}. /reset clears the history, /exit or Ctrl-D quits.\n> `);
  for await (const raw of console) {
    const line = raw.trim();
    if (line === "/exit") break;
    if (line === "/reset") {
      history.length = 0;
      out.write("(history cleared)\n> ");
      continue;
    }
    if (line === "") {
      out.write("> ");
      continue;
    }
    history.push({ role: "user", content: line });
    const prompt = await tokenizer.encode(tokenizer.applyChatTemplate(history, { addGenerationPrompt: true }));
    const room = client.info.maxSeqLen - prompt.length;
    if (room < 1) {
      history.pop();
      out.write(`(the conversation is over the context length of ${client.info.maxSeqLen} tokens: /reset)\n> `);
      continue;
    }
    const stream = new RequestStream(client, tokenizer, uid++, prompt, { ...params, maxTokens: Math.min(params.maxTokens, room) });
    for await (const step of stream.updates()) for (const u of step) out.write(u.text);
    history.push({ role: "assistant", content: stream.outputs[0].fullText });
    out.write("\n> ");
  }
  out.write("\n");
  await client.close();
}
