// Tool calls in a model's reply, in the two forms chat templates teach models to write them:
//   - Hermes / Qwen 2.5 / Qwen 3 (and the models trained on their templates): one JSON object
//     {"name": ..., "arguments": {...}} per <tool_call> … </tool_call> block;
//   - Mistral: [TOOL_CALLS] followed by a JSON list of such objects;
//   - Llama 3.x: the whole reply one such object, {"name": ..., "parameters": {...}}, or such an object
//     after <|python_tag|>.
// Where a vocabulary makes a marker a special token, decoding keeps it (TOOL_CALL_MARKERS).
// What is not a well-formed call of one of the request's functions stays in the reply's text: a block
// whose JSON does not parse, or that names no function or another one, is text the model wrote, not a
// call the client should run (which is also what keeps a reply that is merely JSON from being a call).
// A request may also force a call (tool_choice "required" or a named function): forcedCallGrammar is
// the grammar of one call in the form the model's chat template teaches, and the reply is kept in it.
import { compileSchema, objectOf, text, union, type Node } from "../structured/schema.js";
import { UsageError } from "../loader/errors.js";
import { TOOL_CALL_MARKERS, type ToolCall } from "../loader/tokenizer.js";
import type { LazyGrammar } from "../engine/session.js";

/** A call the model asked for: a function name and its arguments as a JSON object's text (OpenAI's form). */
export interface ParsedToolCall {
  name: string;
  arguments: string;
}

const { hermesOpen: HERMES_OPEN, hermesClose: HERMES_CLOSE, mistral: MISTRAL, llama: PYTHON_TAG } = TOOL_CALL_MARKERS;
const OPENING_MARKERS = [HERMES_OPEN, MISTRAL, PYTHON_TAG];

/** Where a tool call may start in `text` (the first marker), or -1. */
export function toolCallStart(text: string): number {
  const at = OPENING_MARKERS.map((m) => text.indexOf(m)).filter((i) => i >= 0);
  return at.length > 0 ? Math.min(...at) : -1;
}

/**
 * How many characters at the end of `text` could begin a tool-call marker: a stream holds them back
 * until the next token says whether a call starts there.
 */
export function partialMarkerLength(text: string): number {
  let longest = 0;
  for (const marker of OPENING_MARKERS)
    for (let n = Math.min(marker.length - 1, text.length); n > longest; n--)
      if (text.endsWith(marker.slice(0, n))) longest = n;
  return longest;
}

/**
 * The reply's text outside its calls, and the calls in order; `functions`: the names a call may have
 * (the request's tools), any name when absent.
 */
export function parseToolCalls(
  text: string,
  functions?: ReadonlySet<string>,
): { content: string; calls: ParsedToolCall[] } {
  const known = (c: ParsedToolCall | undefined) => (c && (!functions || functions.has(c.name)) ? c : undefined);
  const calls: ParsedToolCall[] = [];
  let content = "";
  let rest = text;
  for (;;) {
    const open = rest.indexOf(HERMES_OPEN);
    if (open < 0) break;
    const close = rest.indexOf(HERMES_CLOSE, open + HERMES_OPEN.length);
    const end = close < 0 ? rest.length : close + HERMES_CLOSE.length;
    const call = known(toCall(rest.slice(open + HERMES_OPEN.length, close < 0 ? rest.length : close)));
    if (call) {
      content += rest.slice(0, open);
      calls.push(call);
    } else content += rest.slice(0, end);
    rest = rest.slice(end);
  }
  content += rest;
  const mistral = content.indexOf(MISTRAL);
  if (mistral >= 0) {
    const list = jsonValue(content.slice(mistral + MISTRAL.length));
    const parsed = Array.isArray(list) ? list.map((x) => known(toCallObject(x))) : [];
    if (parsed.length > 0 && parsed.every((c) => c !== undefined)) {
      calls.push(...(parsed as ParsedToolCall[]));
      content = content.slice(0, mistral);
    }
  }
  // Llama 3.x: a call after <|python_tag|>, or the whole reply a call (only where the functions are
  // known: other JSON is text).
  const tag = content.indexOf(PYTHON_TAG);
  const tagged = calls.length === 0 && tag >= 0 ? known(toCall(content.slice(tag + PYTHON_TAG.length))) : undefined;
  if (tagged) return { content: content.slice(0, tag).trim(), calls: [tagged] };
  const whole = calls.length === 0 && functions ? known(toCall(content)) : undefined;
  if (whole) return { content: "", calls: [whole] };
  return { content: content.trim(), calls };
}

function jsonValue(text: string): unknown {
  try {
    return JSON.parse(text.trim());
  } catch {
    return undefined;
  }
}

function toCall(text: string): ParsedToolCall | undefined {
  return toCallObject(jsonValue(text));
}

/** {"name": string, "arguments" (or "parameters"): object or its JSON text} as a call, else undefined. */
function toCallObject(x: unknown): ParsedToolCall | undefined {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return undefined;
  const o = x as Record<string, unknown>;
  if (typeof o.name !== "string" || o.name === "") return undefined;
  const args = o.arguments ?? o.parameters ?? {};
  if (typeof args === "string") return jsonValue(args) === undefined ? undefined : { name: o.name, arguments: args };
  if (typeof args !== "object" || args === null || Array.isArray(args)) return undefined;
  return { name: o.name, arguments: JSON.stringify(args) };
}

/**
 * A streamed reply's text as a client may see it while tool calls may come: everything before a
 * call's marker goes out as it arrives, the marker and what follows are held back (and a possible
 * marker's first characters until the next piece says whether one starts there).
 */
export class ToolCallStream {
  private text = "";
  private sent = 0;

  /** `functions`: the request's tools' names; a reply that opens with "{" may then be a Llama call. */
  constructor(private readonly functions?: ReadonlySet<string>) {}

  /** Add the next piece of the reply; returns the text that can go out now. */
  push(piece: string): string {
    this.text += piece;
    if (this.functions && this.sent === 0 && /^\s*(\{|$)/.test(this.text)) return ""; // a call, or not yet known
    const start = toolCallStart(this.text);
    const upTo = Math.max(this.sent, start >= 0 ? start : this.text.length - partialMarkerLength(this.text));
    const out = this.text.slice(this.sent, upTo);
    this.sent = upTo;
    return out;
  }

  /** At the end: the calls the reply made, or (none) the text still held back, to send as text. */
  finish(): { calls: ParsedToolCall[]; heldText: string } {
    const { calls } = parseToolCalls(this.text, this.functions);
    return { calls, heldText: calls.length > 0 ? "" : this.text.slice(this.sent) };
  }
}

/** The call form a chat template teaches: Hermes/Qwen's <tool_call> block, Mistral's list, Llama 3's object. */
function callForm(template: string | undefined): "hermes" | "mistral" | "llama" {
  if (template?.includes(HERMES_OPEN)) return "hermes";
  if (template?.includes(MISTRAL)) return "mistral";
  return "llama";
}

/**
 * One call's JSON object, of the function `name` (any of `tools` when undefined): {"name", and
 * "arguments" (Llama 3: "parameters") held to the function's `parameters` schema}. An unsupported
 * schema is a UsageError naming the function.
 */
function callObject(tools: readonly unknown[], name: string | undefined, argsKey: string): Node {
  const fns = tools
    .map((t) => (t as { function: { name: string; parameters?: unknown } }).function)
    .filter((f) => name === undefined || f.name === name);
  return union(
    fns.map((f) => {
      let args: Node;
      try {
        args = compileSchema(f.parameters ?? { type: "object" });
      } catch (e) {
        throw new UsageError(`function ${JSON.stringify(f.name)}: ${(e as Error).message}`);
      }
      return objectOf([
        ["name", compileSchema({ const: f.name })],
        [argsKey, args],
      ]);
    }),
  );
}

/** The grammar of one call of the function `name` (any of `tools` when undefined), in the template's form. */
export function forcedCallGrammar(template: string | undefined, tools: readonly unknown[], name?: string): Node {
  const form = callForm(template);
  const call = callObject(tools, name, form === "llama" ? "parameters" : "arguments");
  if (form === "hermes") return { t: "seq", parts: [text(`${HERMES_OPEN}\n`), call, text(`\n${HERMES_CLOSE}`)] };
  if (form === "mistral") return { t: "seq", parts: [text(MISTRAL), { t: "array", items: call, min: 1, max: 1 }] };
  return call;
}

/**
 * The grammar a reply with `tools` is held to: the whole reply one call where `forced` (true: of any
 * of the tools, else of that function), else `grammar` (response_format's) where given, else a call
 * after its marker (tool_choice "auto"). A function whose parameters a grammar cannot hold is a
 * UsageError naming it.
 */
export function toolGrammar(
  template: string | undefined,
  tools: readonly unknown[],
  forced: string | true | undefined,
  grammar: Node | undefined,
): { grammar?: Node; lazyGrammar?: LazyGrammar } {
  try {
    if (forced !== undefined)
      return { grammar: forcedCallGrammar(template, tools, forced === true ? undefined : forced) };
    return grammar ? { grammar } : { lazyGrammar: callAfterMarker(template, tools) };
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`"tools": ${e.message}`);
    throw e;
  }
}

/**
 * For tool_choice "auto": what follows a call's marker when the model writes one (a call of one of
 * the tools, to the marker's end), so that a call the model decides to make is well formed. Llama
 * 3's marker is <|python_tag|>; its bare object is held from the reply's start where the reply opens
 * with {"name", as Llama 3's template asks for a call.
 */
export function callAfterMarker(
  template: string | undefined,
  tools: readonly unknown[],
): { trigger: string; opening?: string; grammar: Node } {
  const form = callForm(template);
  const call = callObject(tools, undefined, form === "llama" ? "parameters" : "arguments");
  if (form === "llama") return { trigger: PYTHON_TAG, opening: '{"name"', grammar: call };
  if (form === "hermes")
    return { trigger: HERMES_OPEN, grammar: { t: "seq", parts: [call, text(`\n${HERMES_CLOSE}`)] } };
  return { trigger: MISTRAL, grammar: { t: "array", items: call, min: 1, max: Infinity } };
}

/** The names of `tools` (checked to be OpenAI's function tools). */
export function functionNames(tools: readonly unknown[]): ReadonlySet<string> {
  return new Set(tools.map((t) => (t as { function: { name: string } }).function.name));
}

/** Calls with OpenAI's ids, unique within the reply `replyId` names. */
export function withCallIds(replyId: string, calls: readonly ParsedToolCall[]): ToolCall[] {
  return calls.map((c, i) => ({
    id: `call_${replyId.replace(/\W/g, "")}_${i}`,
    type: "function",
    function: { name: c.name, arguments: c.arguments },
  }));
}
