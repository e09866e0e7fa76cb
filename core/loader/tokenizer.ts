// The model's tokenizer (tokenizer.json through @huggingface/tokenizers, or a slow tokenizer's files
// converted to one: sentencepiece.ts, bpe-files.ts) and chat template (through
// @huggingface/jinja, found where transformers looks: chat_template.jinja, tokenizer_config.json's
// chat_template, then chat_template.json), with the special-token rules Hugging Face applies: BOS
// only when the tokenizer says so, EOS from every config that names one.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { ChatTemplateError, ModelError } from "./errors.js";
import { isObject, readJsonFile } from "./json.js";
import { bpeFilesTokenizer } from "./bpe-files.js";
import { sentencePieceTokenizer } from "./sentencepiece.js";
import { SPECIAL_TOKEN_KEYS, tokenText } from "./tokenizer-json.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  /** An assistant turn's function calls (OpenAI's form: arguments as a JSON object's text). */
  tool_calls?: ToolCall[];
  /** A tool turn: the call it answers. */
  tool_call_id?: string;
}

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/**
 * The markers models write around tool calls (Hermes / Qwen, Mistral, Llama 3.1). Where a vocabulary
 * makes one a special token, decoding keeps it all the same: a tool-call parser has to see it (as
 * llama.cpp's and vLLM's parsers do), and a grammar triggered by it has to know its bytes.
 */
export const TOOL_CALL_MARKERS = {
  hermesOpen: "<tool_call>",
  hermesClose: "</tool_call>",
  mistral: "[TOOL_CALLS]",
  llama: "<|python_tag|>",
} as const;
const KEPT_SPECIAL: ReadonlySet<string> = new Set(Object.values(TOOL_CALL_MARKERS));

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
}

function addedTokens(json: Record<string, unknown>): AddedToken[] {
  return (Array.isArray(json.added_tokens) ? json.added_tokens : []) as AddedToken[];
}

export class ModelTokenizer {
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  readonly bosId: number | undefined;
  /** Whether encode() of a plain prompt adds special tokens (BOS) — the tokenizer's own rule. */
  readonly addsSpecialTokens: boolean;
  private readonly template: { jinja: Template; file: string } | undefined;
  /** The chat template's text, as found by `findChatTemplate` (GGUF export copies it). */
  readonly templateSource: string | undefined;
  private readonly tokenizer: Tokenizer;
  /** Special tokens decoding drops, and those of them it keeps (TOOL_CALL_MARKERS). */
  private readonly specialIds: ReadonlySet<number>;
  private readonly keptSpecialIds: ReadonlySet<number>;

  constructor(
    readonly file: string,
    /** tokenizer.json's contents (or what a slow tokenizer's files were converted to). */
    readonly json: Record<string, unknown>,
    readonly config: Record<string, unknown>,
    chatTemplate: ChatTemplateSource | undefined,
  ) {
    try {
      this.tokenizer = new Tokenizer(json, config);
    } catch (e) {
      throw new ModelError("BAD_TOKENIZER", file, `cannot build the tokenizer: ${(e as Error).message}`);
    }
    const special = addedTokens(json).filter((t) => t.special);
    this.specialIds = new Set(special.map((t) => t.id));
    this.keptSpecialIds = new Set(special.filter((t) => KEPT_SPECIAL.has(t.content)).map((t) => t.id));
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.bosId = this.bosToken === undefined ? undefined : this.tokenizer.token_to_id(this.bosToken);
    // HF: add_bos_token when the config says; otherwise the post-processor (e.g. Llama 3's
    // TemplateProcessing) decides. No post-processor and no flag means no BOS.
    this.addsSpecialTokens =
      typeof config.add_bos_token === "boolean"
        ? config.add_bos_token
        : json.post_processor !== null && json.post_processor !== undefined;
    if (chatTemplate !== undefined) {
      try {
        this.template = { jinja: new Template(chatTemplate.text), file: chatTemplate.file };
        this.templateSource = chatTemplate.text;
      } catch (e) {
        throw new ModelError(
          "BAD_TOKENIZER",
          chatTemplate.file,
          `the chat template does not parse: ${(e as Error).message}`,
        );
      }
    }
  }

  /**
   * The file a folder's tokenizer loads from: tokenizer.json, or where a repo ships only a slow
   * tokenizer's files (which transformers converts on load; so do we) SentencePiece's tokenizer.model
   * or GPT-2's vocab.json (with merges.txt). NOT_FOUND when there is none.
   */
  static fileIn(dir: string): string {
    const candidates = [["tokenizer.json"], ["tokenizer.model"], ["vocab.json", "merges.txt"]];
    const found = candidates.find((names) => names.every((f) => existsSync(join(dir, f))));
    if (!found)
      throw new ModelError(
        "NOT_FOUND",
        join(dir, "tokenizer.json"),
        "tokenizer.json is missing; the model cannot turn text into tokens",
      );
    return join(dir, found[0]);
  }

  static load(dir: string): ModelTokenizer {
    const file = ModelTokenizer.fileIn(dir);
    const configFile = join(dir, "tokenizer_config.json");
    const config = existsSync(configFile) ? readJsonFile(configFile) : {};
    if (!isObject(config)) throw new ModelError("BAD_JSON", configFile, "not a JSON object");
    fillSpecialTokens(config, dir);
    const template = findChatTemplate(dir, config, configFile);
    if (file.endsWith("tokenizer.model")) {
      const converted = sentencePieceTokenizer(file, config);
      return new ModelTokenizer(file, converted.json, converted.config, template);
    }
    if (file.endsWith("vocab.json")) return new ModelTokenizer(file, bpeFilesTokenizer(dir, config), config, template);
    const json = readJsonFile(file);
    if (!isObject(json) || !isObject(json.model))
      throw new ModelError("BAD_TOKENIZER", file, "not a Hugging Face tokenizer.json (no model section)");
    return new ModelTokenizer(file, json, config, template);
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /**
   * Whether the chat template reads `enable_thinking` (Qwen3, SmolLM3: a reasoning model whose
   * thinking can be switched off), so a UI can offer the switch.
   */
  get thinkingSwitch(): boolean {
    return this.templateSource?.includes("enable_thinking") ?? false;
  }

  /** The chat template reads `tools` (function definitions a request may give the model). */
  get readsTools(): boolean {
    return /\btools\b/.test(this.templateSource ?? "");
  }

  /** Token ids of `text`. Special tokens written in the text (e.g. "<|im_end|>") become their ids. */
  encode(text: string, addSpecialTokens = this.addsSpecialTokens): number[] {
    const ids = this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (addSpecialTokens && this.config.add_bos_token === true && this.bosId !== undefined && ids[0] !== this.bosId) {
      ids.unshift(this.bosId);
    }
    return ids;
  }

  /** The text of `ids`; special tokens are dropped (unless `skipSpecialTokens` is false) but for tool-call markers. */
  decode(ids: readonly number[], skipSpecialTokens = true): string {
    let list = [...ids];
    if (skipSpecialTokens && list.some((id) => this.keptSpecialIds.has(id))) {
      list = list.filter((id) => !this.specialIds.has(id) || this.keptSpecialIds.has(id));
      skipSpecialTokens = false;
    }
    if (list.length === 0) return ""; // the library rejects an empty list
    return this.tokenizer.decode(list, {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /**
   * The bytes each token id adds to the decoded text (index = id), for grammars that work on bytes
   * (structured output); null for special tokens, which decoding drops (but for tool-call markers). Byte-level BPE vocabularies
   * (GPT-2, Llama 3, Qwen) spell bytes as GPT-2's symbols; SentencePiece ones (Llama 2, Gemma) write
   * spaces as ▁ and raw bytes as <0xNN>. Computed on each call (the caller keeps what it needs).
   */
  tokenBytes(): (Uint8Array | null)[] {
    const model = this.json.model as Record<string, unknown>;
    const pieces: [string, number][] = Array.isArray(model.vocab)
      ? (model.vocab as [string, number][]).map(([piece], id) => [piece, id]) // Unigram: [piece, score] by id
      : Object.entries((model.vocab ?? {}) as Record<string, number>);
    const added = addedTokens(this.json);
    const size = Math.max(0, ...pieces.map(([, id]) => id + 1), ...added.map((t) => t.id + 1));
    const decoders = decoderTypes(this.json.decoder);
    const utf8 = new TextEncoder();
    const symbolByte = new Map(bytesToUnicode().map((s, b) => [s, b]));
    const spell = (piece: string): Uint8Array => {
      if (decoders.has("ByteLevel")) {
        const out = new Uint8Array(piece.length);
        for (let i = 0; i < piece.length; i++) {
          const b = symbolByte.get(piece[i]);
          if (b === undefined) return utf8.encode(piece); // not a byte symbol: the piece is plain text
          out[i] = b;
        }
        return out;
      }
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      if (byte && decoders.has("ByteFallback")) return Uint8Array.of(parseInt(byte[1], 16));
      return utf8.encode(piece.replaceAll("\u2581", " "));
    };
    const bytes: (Uint8Array | null)[] = new Array(size).fill(null);
    for (const [piece, id] of pieces) bytes[id] = spell(piece);
    for (const t of added)
      bytes[t.id] = this.specialIds.has(t.id) && !this.keptSpecialIds.has(t.id) ? null : utf8.encode(t.content);
    return bytes;
  }

  /**
   * Render the conversation with the model's chat template (the prompt for the next assistant turn).
   * `thinking: false` passes `enable_thinking: false`, which reasoning templates turn into an empty
   * think block; templates that do not read it ignore it.
   */
  applyChatTemplate(
    messages: readonly ChatMessage[],
    addGenerationPrompt = true,
    options: { thinking?: boolean; tools?: readonly unknown[] } = {},
  ): string {
    if (!this.template) {
      throw new ModelError(
        "BAD_TOKENIZER",
        this.file,
        "this model has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json); " +
          "use `hire generate` with a plain prompt",
      );
    }
    try {
      return this.template.jinja.render({
        messages: messages.map(forTemplate),
        add_generation_prompt: addGenerationPrompt,
        ...(options.tools && options.tools.length > 0 && { tools: options.tools }),
        ...(options.thinking !== undefined && { enable_thinking: options.thinking }),
        bos_token: this.bosToken ?? "",
        eos_token: this.eosToken ?? "",
      });
    } catch (e) {
      throw new ChatTemplateError(this.template.file, (e as Error).message);
    }
  }
}

/**
 * The special tokens special_tokens_map.json names that tokenizer_config.json does not (transformers
 * reads both; older and slow tokenizers' repos often keep them only there).
 */
function fillSpecialTokens(config: Record<string, unknown>, dir: string): void {
  const file = join(dir, "special_tokens_map.json");
  if (!existsSync(file)) return;
  const map = readJsonFile(file);
  if (!isObject(map)) throw new ModelError("BAD_JSON", file, "not a JSON object");
  for (const key of SPECIAL_TOKEN_KEYS)
    if (config[key] == null && tokenText(map[key]) !== undefined) config[key] = map[key];
}

/**
 * A message as chat templates read it: a call's arguments as an object (templates write them with
 * tojson, as transformers passes them), not OpenAI's JSON text.
 */
function forTemplate(m: ChatMessage): ChatMessage | Record<string, unknown> {
  if (!m.tool_calls) return m;
  const args = (text: string): unknown => {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  };
  return {
    ...m,
    tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: args(c.function.arguments) } })),
  };
}

/** The decoder types of a tokenizer.json's decoder (a Sequence's members). */
function decoderTypes(decoder: unknown): Set<string> {
  if (!isObject(decoder)) return new Set();
  if (decoder.type === "Sequence" && Array.isArray(decoder.decoders))
    return new Set(decoder.decoders.filter(isObject).map((d) => String(d.type)));
  return new Set([String(decoder.type)]);
}

/** GPT-2's reversible byte -> printable unicode symbol table (index = byte value). */
export function bytesToUnicode(): string[] {
  const direct: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) direct.push(b);
  for (let b = 0xa1; b <= 0xac; b++) direct.push(b);
  for (let b = 0xae; b <= 0xff; b++) direct.push(b);
  const isDirect = new Set(direct);
  const table: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCharCode(isDirect.has(b) ? b : 256 + n++);
  }
  return table;
}

/** A chat template's text and the file it came from (for errors). */
export interface ChatTemplateSource {
  text: string;
  file: string;
}

/**
 * The chat template as transformers finds it: chat_template.jinja (what transformers has saved since
 * 4.50; it wins over the config's), then tokenizer_config.json's chat_template, then
 * chat_template.json ({"chat_template": ...}, a processor's file in multimodal repos).
 */
export function findChatTemplate(
  dir: string,
  config: Record<string, unknown>,
  configFile: string,
): ChatTemplateSource | undefined {
  const jinja = join(dir, "chat_template.jinja");
  if (existsSync(jinja)) return { text: readFileSync(jinja, "utf8"), file: jinja };
  const inConfig = templateIn(config, configFile);
  if (inConfig) return inConfig;
  const jsonFile = join(dir, "chat_template.json");
  if (!existsSync(jsonFile)) return undefined;
  const json = readJsonFile(jsonFile);
  if (!isObject(json)) throw new ModelError("BAD_JSON", jsonFile, "not a JSON object");
  const found = templateIn(json, jsonFile);
  if (!found) throw new ModelError("BAD_TOKENIZER", jsonFile, `has no "chat_template" string`);
  return found;
}

/** `chat_template` of a config: a string, or a list of named templates ([{name, template}]) whose "default" is used. */
function templateIn(config: Record<string, unknown>, file: string): ChatTemplateSource | undefined {
  const t = config.chat_template;
  if (typeof t === "string") return { text: t, file };
  if (Array.isArray(t)) {
    for (const named of t) {
      if (isObject(named) && named.name === "default" && typeof named.template === "string")
        return { text: named.template, file };
    }
  }
  return undefined;
}
