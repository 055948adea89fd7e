import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "tokenizers";

export type ChatMessage = {
  role: string;
  content: string | null;
  reasoning_content?: string;
  tool_calls?: unknown[];
  name?: string;
};

export type ChatTemplateOptions = {
  addGenerationPrompt?: boolean;
  kwargs?: Record<string, unknown>;
  tools?: unknown[];
};

type AddedTokenJson = { id: number; content: string; special: boolean };
type TokenJson = string | { content: string } | null | undefined;
type NamedTemplate = { name: string; template: string };

type TokenizerConfig = {
  chat_template?: string | NamedTemplate[];
  bos_token?: TokenJson;
  eos_token?: TokenJson;
};

function readJson<T>(path: string): T | undefined {
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

// tokenizer_config.json stores special tokens either as plain strings or as AddedToken objects.
function tokenContent(token: TokenJson): string | undefined {
  if (typeof token === "string") return token;
  if (token && typeof token === "object" && typeof token.content === "string") return token.content;
  return undefined;
}

function idList(value: unknown): number[] {
  if (typeof value === "number") return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === "number");
  return [];
}

function pickTemplate(source: string | NamedTemplate[] | undefined): string | undefined {
  if (typeof source === "string") return source;
  if (Array.isArray(source)) return source.find((t) => t.name === "default")?.template;
  return undefined;
}

/**
 * A Hugging Face tokenizer plus the model's chat template and EOS ids.
 *
 * Special-token strings in user text: `encode` keeps the HF behaviour, so a literal `<|im_end|>`
 * inside user content becomes the special token id (split_special_tokens=false, as in transformers).
 * This matches what Python servers built on transformers do; callers that need to neutralise it must
 * sanitise the text before it reaches the chat template.
 */
export class TextTokenizer {
  readonly eosTokenIds: number[];
  readonly vocabSize: number;

  private readonly specialIds: Set<number>;
  private readonly chatTemplate: string | undefined;
  private readonly bosToken: string | undefined;
  private readonly eosToken: string | undefined;
  private compiledTemplate: Template | undefined;

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly modelDir: string,
    addedTokens: AddedTokenJson[],
    config: TokenizerConfig,
    chatTemplate: string | undefined,
    eosIds: number[],
  ) {
    this.vocabSize = tokenizer.getVocabSize(true);
    this.specialIds = new Set(addedTokens.filter((t) => t.special).map((t) => t.id));
    this.chatTemplate = chatTemplate;
    this.bosToken = tokenContent(config.bos_token);
    this.eosToken = tokenContent(config.eos_token);
    this.eosTokenIds = eosIds;
  }

  static async load(modelDir: string): Promise<TextTokenizer> {
    const tokenizerPath = join(modelDir, "tokenizer.json");
    if (!existsSync(tokenizerPath)) {
      throw new Error(`tokenizer.json not found in model directory ${modelDir}`);
    }
    const tokenizer = Tokenizer.fromFile(tokenizerPath);
    // The binding does not expose which added tokens are special, so read that from the file.
    const tokenizerJson = readJson<{ added_tokens?: AddedTokenJson[] }>(tokenizerPath);
    const config = readJson<TokenizerConfig>(join(modelDir, "tokenizer_config.json")) ?? {};

    const templatePath = join(modelDir, "chat_template.jinja");
    const chatTemplate = existsSync(templatePath)
      ? readFileSync(templatePath, "utf8")
      : pickTemplate(config.chat_template);

    const genConfig = readJson<{ eos_token_id?: unknown }>(join(modelDir, "generation_config.json"));
    const modelConfig = readJson<{ eos_token_id?: unknown }>(join(modelDir, "config.json"));
    const eosIds = [...idList(genConfig?.eos_token_id), ...idList(modelConfig?.eos_token_id)];
    const eosContent = tokenContent(config.eos_token);
    const eosFromConfig = eosContent === undefined ? null : tokenizer.tokenToId(eosContent);
    if (eosFromConfig !== null) eosIds.push(eosFromConfig);

    return new TextTokenizer(
      tokenizer,
      modelDir,
      tokenizerJson?.added_tokens ?? [],
      config,
      chatTemplate,
      [...new Set(eosIds)],
    );
  }

  async encode(text: string): Promise<number[]> {
    const encoding = await this.tokenizer.encode(text, null, { addSpecialTokens: false });
    return encoding.getIds();
  }

  decode(ids: number[], skipSpecialTokens = true): Promise<string> {
    return this.tokenizer.decode(ids, skipSpecialTokens);
  }

  /** Decodes several id lists in one native call (one async hop instead of several). */
  decodeBatch(batch: number[][], skipSpecialTokens = true): Promise<string[]> {
    return this.tokenizer.decodeBatch(batch, skipSpecialTokens);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.tokenToId(token) ?? undefined;
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.idToToken(id) ?? undefined;
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== undefined;
  }

  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === undefined) {
      throw new Error(
        `model directory ${this.modelDir} has no chat template (no chat_template.jinja and no chat_template in tokenizer_config.json)`,
      );
    }
    this.compiledTemplate ??= new Template(this.chatTemplate);
    const context: Record<string, unknown> = {
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    // Like transformers, absent special tokens are left undefined rather than passed as null.
    if (this.bosToken !== undefined) context.bos_token = this.bosToken;
    if (this.eosToken !== undefined) context.eos_token = this.eosToken;
    if (options.tools !== undefined) context.tools = options.tools;
    return this.compiledTemplate.render({ ...context, ...options.kwargs });
  }
}
