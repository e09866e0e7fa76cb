// Conversations: the list the host keeps, the open conversation with its messages (the streaming
// reply included, with per-token marks), and the pure reducers behind them. The host persists a
// conversation (`conversations.save`) after each user send and after each reply ends.
import { createStore } from "zustand/vanilla";
import type {
  ChatMessage,
  Conversation,
  ConversationSummary,
  FinishReason,
  GenerationSummary,
  StoredMessage,
  TokenMark,
} from "../../../core/host/protocol.js";

export const NEW_TITLE = "New conversation";

export function newConversationId(now = Date.now(), random = Math.random): string {
  return `c${now.toString(36)}-${Math.floor(random() * 0x100000000).toString(36)}`;
}

export function emptyConversation(now = Date.now(), id = newConversationId(now), system = ""): Conversation {
  return { id, title: NEW_TITLE, createdAt: now, updatedAt: now, modelPath: null, system, messages: [] };
}

/** A title from the first user message: its first line, at most 60 characters. */
export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ");
  return line.length > 60 ? `${line.slice(0, 59)}…` : line || NEW_TITLE;
}

const touch = (c: Conversation, now: number, messages: StoredMessage[]): Conversation => ({
  ...c,
  messages,
  updatedAt: now,
});

export function appendUser(c: Conversation, text: string, now = Date.now()): Conversation {
  const next = touch(c, now, [...c.messages, { role: "user", content: text }]);
  if (c.title === NEW_TITLE) next.title = titleFrom(text);
  return next;
}

/** Add an empty assistant message to stream into; returns the conversation and its index. */
export function beginReply(c: Conversation, lane?: string, now = Date.now()): [Conversation, number] {
  const m: StoredMessage = { role: "assistant", content: "", tokens: [] };
  if (lane) m.lane = lane;
  return [touch(c, now, [...c.messages, m]), c.messages.length];
}

/** Append streamed tokens to message `index` (content and marks). */
export function appendTokens(c: Conversation, index: number, marks: TokenMark[]): Conversation {
  const m = c.messages[index];
  if (!m || marks.length === 0) return c;
  let text = "";
  for (const t of marks) text += t.text;
  const messages = c.messages.slice();
  messages[index] = { ...m, content: m.content + text, tokens: [...(m.tokens ?? []), ...marks] };
  return { ...c, messages };
}

/** The reply ended: its final text (the host's, which drops a matched stop string) and its stats. */
export function finishReply(
  c: Conversation,
  index: number,
  summary: GenerationSummary,
  now = Date.now(),
): Conversation {
  const m = c.messages[index];
  if (!m) return c;
  const recalls = (m.tokens ?? []).map((t) => t.recall).filter((r): r is number => r !== null);
  const stats: StoredMessage["stats"] = {
    tokens: summary.tokens,
    ttftMs: summary.ttftMs,
    decodeTokensPerS: summary.decodeTokensPerS,
    finishReason: summary.finishReason,
  };
  if (recalls.length > 0) stats.meanRecall = recalls.reduce((a, b) => a + b, 0) / recalls.length;
  const messages = c.messages.slice();
  // A reply that called tools keeps its text outside the calls, and the calls.
  messages[index] = summary.toolCalls
    ? { ...m, content: summary.content ?? "", tool_calls: summary.toolCalls, stats }
    : { ...m, content: summary.text, stats };
  return touch(c, now, messages);
}

/** The result of tool call `callId` (of the last reply), as the tool's message. */
export function appendToolResult(c: Conversation, callId: string, content: string, now = Date.now()): Conversation {
  const known = c.messages.some((m) => m.tool_calls?.some((t) => t.id === callId));
  if (!known) throw new RangeError(`no tool call ${callId} in this conversation`);
  return touch(c, now, [...c.messages, { role: "tool", content, tool_call_id: callId }]);
}

/** The calls of message `index` that no tool message answers yet. */
export function unansweredCalls(c: Conversation, index: number): string[] {
  const answered = new Set(c.messages.slice(index + 1).map((m) => m.tool_call_id));
  return (c.messages[index]?.tool_calls ?? []).map((t) => t.id).filter((id) => !answered.has(id));
}

/** The request failed before or while streaming: drop an empty reply, keep a partial one as aborted. */
export function failReply(c: Conversation, index: number, now = Date.now()): Conversation {
  const m = c.messages[index];
  if (!m) return c;
  if (m.content === "" && (m.tokens?.length ?? 0) === 0)
    return touch(c, now, [...c.messages.slice(0, index), ...c.messages.slice(index + 1)]);
  const messages = c.messages.slice();
  const tokens = m.tokens?.length ?? 0;
  messages[index] = { ...m, stats: { tokens, ttftMs: 0, decodeTokensPerS: 0, finishReason: "aborted" } };
  return touch(c, now, messages);
}

/**
 * Remove the replies after the last user message or tool result (regenerate, A/B); null when there is
 * neither.
 */
export function dropTrailingReplies(c: Conversation, now = Date.now()): Conversation | null {
  let last = c.messages.length - 1;
  while (last >= 0 && c.messages[last].role !== "user" && c.messages[last].role !== "tool") last--;
  if (last < 0) return null;
  return last === c.messages.length - 1 ? c : touch(c, now, c.messages.slice(0, last + 1));
}

/** Edit user message `index` and drop everything after it (edit-and-resend). */
export function editUserMessage(c: Conversation, index: number, text: string, now = Date.now()): Conversation {
  const m = c.messages[index];
  if (!m || m.role !== "user") throw new RangeError(`message ${index} is not a user message`);
  const next = touch(c, now, [...c.messages.slice(0, index), { role: "user", content: text }]);
  if (index === 0 && (c.title === NEW_TITLE || c.title === titleFrom(m.content))) next.title = titleFrom(text);
  return next;
}

/**
 * The chat the model sees: the system prompt, then the messages. Of an A/B pair only the sparse
 * lane continues the conversation (the dense lane is a reference).
 */
export function historyFor(c: Conversation): ChatMessage[] {
  const out: ChatMessage[] = [];
  if (c.system.trim() !== "") out.push({ role: "system", content: c.system });
  for (const m of c.messages) {
    if (m.lane === "dense") continue;
    if (m.role === "assistant" && m.content === "" && !m.tool_calls) continue;
    out.push({
      role: m.role,
      content: m.content,
      ...(m.tool_calls && { tool_calls: m.tool_calls }),
      ...(m.tool_call_id !== undefined && { tool_call_id: m.tool_call_id }),
    });
  }
  return out;
}

const finite = (x: number) => (Number.isFinite(x) ? x : 0);
const FINISH: readonly FinishReason[] = ["eos", "stop", "length", "context_full", "aborted"];

/** Exactly what `conversations.save` accepts: known keys only, finite numbers, bounded token text. */
export function savePayload(c: Conversation): Conversation {
  return {
    id: c.id,
    title: c.title.slice(0, 200),
    createdAt: finite(c.createdAt),
    updatedAt: finite(c.updatedAt),
    modelPath: c.modelPath,
    system: c.system,
    messages: c.messages.map((m) => {
      const out: StoredMessage = { role: m.role, content: m.content };
      if (m.tool_calls) out.tool_calls = m.tool_calls;
      if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
      if (m.lane) out.lane = m.lane.slice(0, 16);
      if (m.stats) {
        out.stats = {
          tokens: Math.round(finite(m.stats.tokens)),
          ttftMs: finite(m.stats.ttftMs),
          decodeTokensPerS: finite(m.stats.decodeTokensPerS),
          finishReason: FINISH.includes(m.stats.finishReason) ? m.stats.finishReason : "aborted",
        };
        if (m.stats.meanRecall !== undefined && Number.isFinite(m.stats.meanRecall))
          out.stats.meanRecall = m.stats.meanRecall;
      }
      if (m.tokens && m.tokens.length > 0) {
        out.tokens = m.tokens.slice(0, 100_000).map((t) => ({
          text: t.text.slice(0, 1000),
          recall: t.recall !== null && Number.isFinite(t.recall) ? t.recall : null,
          headMass: t.headMass !== null && Number.isFinite(t.headMass) ? t.headMass : null,
          ...(t.divergence != null && Number.isFinite(t.divergence) ? { divergence: t.divergence } : {}),
          ms: finite(t.ms),
        }));
      }
      return out;
    }),
  };
}

/** The conversation as a JSON file (export). */
export function exportJson(c: Conversation): string {
  return JSON.stringify({ format: "hire-studio.conversation", version: 1, ...savePayload(c) }, null, 2);
}

export function summaryOf(c: Conversation): ConversationSummary {
  return { id: c.id, title: c.title, updatedAt: c.updatedAt, messages: c.messages.length };
}

/** Insert or replace a summary, newest first. */
export function upsertSummary(list: ConversationSummary[], s: ConversationSummary): ConversationSummary[] {
  return [s, ...list.filter((x) => x.id !== s.id)].sort((a, b) => b.updatedAt - a.updatedAt);
}

/** Index of the first token where two replies differ (-1 when identical). */
export function firstDivergence(a: readonly TokenMark[], b: readonly TokenMark[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i].text !== b[i].text) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * The marks to draw for a message: its tokens, cut where the final text ends (the host drops a
 * matched stop string from the text, not from the streamed tokens). Null when tokens can't be
 * lined up with the text (draw the text instead).
 */
export function displayTokens(m: StoredMessage): TokenMark[] | null {
  const tokens = m.tokens;
  if (!tokens || tokens.length === 0) return null;
  let pos = 0;
  const out: TokenMark[] = [];
  for (const t of tokens) {
    if (pos >= m.content.length) break;
    const part = m.content.slice(pos, pos + t.text.length);
    if (part !== t.text.slice(0, part.length)) return null;
    out.push(part.length === t.text.length ? t : { ...t, text: part });
    pos += part.length;
  }
  return pos === m.content.length ? out : null;
}

/**
 * A reply of a reasoning model (Qwen3, SmolLM3, DeepSeek-R1 distills) that opens with
 * `<think>…</think>`, split into its thinking and its answer, the tags left out. Works on token
 * pieces (or one piece holding the whole text), so each piece keeps its telemetry; a piece that
 * straddles a tag is cut, and `index` gives each output piece's position in the input (the token
 * number the tooltips and the A/B mark use). null when the reply does not open with `<think>`.
 * `done` is false while the model is still thinking (no `</think>` yet).
 */
export interface ThinkingSplit<T> {
  thinking: { piece: T; index: number }[];
  answer: { piece: T; index: number }[];
  done: boolean;
}

const OPEN = "<think>";
const CLOSE = "</think>";

export function splitThinking<T extends { text: string }>(pieces: readonly T[]): ThinkingSplit<T> | null {
  const full = pieces.map((p) => p.text).join("");
  const open = full.indexOf(OPEN);
  if (open < 0 || full.slice(0, open).trim() !== "") return null;
  // Thinking and answer each start past the blank lines models put after a tag.
  let thinkStart = open + OPEN.length;
  while (thinkStart < full.length && /\s/.test(full[thinkStart])) thinkStart++;
  const close = full.indexOf(CLOSE, open + OPEN.length);
  const thinkEnd = close < 0 ? full.length : Math.max(close, thinkStart);
  let answerStart = close < 0 ? full.length : close + CLOSE.length;
  while (answerStart < full.length && /\s/.test(full[answerStart])) answerStart++;
  const out: ThinkingSplit<T> = { thinking: [], answer: [], done: close >= 0 };
  let at = 0;
  pieces.forEach((piece, index) => {
    const a = at;
    const b = (at += piece.text.length);
    const take = (lo: number, hi: number, into: { piece: T; index: number }[]) => {
      const from = Math.max(a, lo);
      const to = Math.min(b, hi);
      if (to <= from) return;
      const text = piece.text.slice(from - a, to - a);
      into.push({ piece: text === piece.text ? piece : { ...piece, text }, index });
    };
    take(thinkStart, thinkEnd, out.thinking);
    take(answerStart, full.length, out.answer);
  });
  return out;
}

export interface Streaming {
  /** The generate request's id (what `stop` targets); null until sent. */
  requestId: number | null;
  /** The message being streamed into. */
  index: number;
  lane?: string;
  prefill: { promptTokens: number; reusedTokens: number; ms: number } | null;
}

export interface ContextUsage {
  used: number;
  length: number;
  finishReason: FinishReason;
}

export interface ConversationsState {
  list: ConversationSummary[];
  current: Conversation;
  streaming: Streaming | null;
  /** An A/B comparison (two generations) is running. */
  comparing: boolean;
  /** The last generation's context usage (unknown for a conversation not generated into yet). */
  context: ContextUsage | null;
  setList(list: ConversationSummary[]): void;
  upsert(s: ConversationSummary): void;
  open(c: Conversation): void;
  update(fn: (c: Conversation) => Conversation): void;
  setStreaming(s: Streaming | null): void;
  setComparing(b: boolean): void;
  setContext(c: ContextUsage | null): void;
}

export type ConversationsStore = ReturnType<typeof createConversationsStore>;

export function createConversationsStore(initial: Conversation = emptyConversation()) {
  return createStore<ConversationsState>()((set) => ({
    list: [],
    current: initial,
    streaming: null,
    comparing: false,
    context: null,
    setList: (list) => set({ list: [...list].sort((a, b) => b.updatedAt - a.updatedAt) }),
    upsert: (s) => set((st) => ({ list: upsertSummary(st.list, s) })),
    open: (current) => set({ current, context: null }),
    update: (fn) => set((st) => ({ current: fn(st.current) })),
    setStreaming: (streaming) => set({ streaming }),
    setComparing: (comparing) => set({ comparing }),
    setContext: (context) => set({ context }),
  }));
}
