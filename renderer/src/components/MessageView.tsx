// One chat message. A reply's tokens can be coloured by a per-token measure (recall, divergence from dense, output-layer
// mass, latency) with a tooltip of each token's stats; A/B replies mark their first divergent token. A reasoning
// model's <think>…</think> opening is shown as a "Thinking" block, open while it streams and folded once it ends.
// A reply's tool calls show as cards, each unanswered one with a box for its result; a tool's result as its own message.
import { memo, useState } from "react";
import type { StoredMessage, TokenMark } from "../../../core/host/protocol.js";
import { displayTokens, splitThinking } from "../state/conversations.js";
import type { TokenMeasure } from "../state/settings.js";
import { latencyColor, qualityColor } from "./colors.js";

const fmt = (v: number | null, digits = 3) => (v === null ? "—" : v.toFixed(digits));

function tokenTitle(t: TokenMark, i: number): string {
  return `#${i} ${JSON.stringify(t.text)}\nrecall ${fmt(t.recall)} · divergence ${fmt(t.divergence ?? null)} · output-layer mass ${fmt(t.headMass)} · ${t.ms.toFixed(2)} ms`;
}

function TokenSpans(props: { tokens: TokenMark[]; measure: TokenMeasure; diverge: number; indices?: number[] }) {
  const { tokens, measure, diverge } = props;
  let lo = Infinity;
  let hi = -Infinity;
  if (measure === "latency") {
    const sorted = tokens.map((t) => t.ms).sort((a, b) => a - b);
    lo = sorted[Math.floor(sorted.length * 0.05)] ?? 0;
    hi = sorted[Math.floor(sorted.length * 0.95)] ?? 1;
  }
  return (
    <>
      {tokens.map((t, at) => {
        const i = props.indices?.[at] ?? at; // the token's number in the whole reply
        let bg: string | undefined;
        if (measure === "recall" && t.recall !== null) bg = qualityColor(t.recall, 0.35);
        else if (measure === "headMass" && t.headMass !== null) bg = qualityColor(t.headMass, 0.35);
        // Relative error of the layer outputs: 0 is dense-exact, 0.5 and beyond shown as worst.
        else if (measure === "divergence" && t.divergence != null) bg = qualityColor(1 - 2 * t.divergence, 0.35);
        else if (measure === "latency") bg = latencyColor(hi > lo ? (t.ms - lo) / (hi - lo) : 0, 0.3);
        const cls = i === diverge ? "tok diverge" : i > diverge && diverge >= 0 ? "tok after" : "tok";
        return (
          <span key={at} className={cls} style={bg ? { background: bg } : undefined} title={tokenTitle(t, i)}>
            {t.text}
          </span>
        );
      })}
    </>
  );
}

/** A reply's text or token spans, with a reasoning model's thinking in a fold of its own. */
function ReplyBody(props: {
  tokens: TokenMark[] | null;
  content: string;
  measure: TokenMeasure;
  diverge: number;
  streaming: boolean;
}) {
  const { tokens, measure, diverge, streaming } = props;
  const split = tokens ? splitThinking(tokens) : splitThinking([{ text: props.content }]);
  const spans = (part: { piece: { text: string }; index: number }[]) =>
    tokens ? (
      <TokenSpans
        tokens={part.map((p) => p.piece as TokenMark)}
        indices={part.map((p) => p.index)}
        measure={measure}
        diverge={diverge}
      />
    ) : (
      part.map((p) => p.piece.text).join("")
    );
  if (!split) {
    return (
      <div className="msg-body">
        {tokens ? <TokenSpans tokens={tokens} measure={measure} diverge={diverge} /> : props.content}
        {streaming && <span className="caret" />}
      </div>
    );
  }
  // An empty <think></think> (Qwen3 with thinking switched off) gets no fold.
  const fold = !split.done || split.thinking.length > 0;
  return (
    <>
      {/* Keyed on done, so the fold opens while thinking streams and starts folded once it ends. */}
      {fold && (
        <details className="thinking" open={!split.done} key={split.done ? "done" : "thinking"} data-testid="thinking">
          <summary>{split.done ? "Thought" : "Thinking…"}</summary>
          <div className="msg-body thinking-body">
            {spans(split.thinking)}
            {streaming && !split.done && <span className="caret" />}
          </div>
        </details>
      )}
      <div className="msg-body">
        {spans(split.answer)}
        {streaming && split.done && <span className="caret" />}
      </div>
    </>
  );
}

export interface MessageProps {
  m: StoredMessage;
  index: number;
  streaming: boolean;
  measure: TokenMeasure;
  /** First divergent token of an A/B pair (-1: none). */
  diverge?: number;
  canEdit: boolean;
  onEdit?: (index: number, text: string) => void;
  /** The ids of this reply's tool calls that no result answers yet. */
  unanswered?: readonly string[];
  /** Send a call's result (and generate the next reply); absent while results cannot be sent. */
  onToolResult?: (callId: string, result: string) => void;
}

/** One tool call: the function and its arguments, and a box for its result while none is sent. */
function ToolCallCard(props: {
  call: NonNullable<StoredMessage["tool_calls"]>[number];
  open: boolean;
  onResult?: (callId: string, result: string) => void;
}) {
  const { call, open } = props;
  const [result, setResult] = useState("");
  let args = call.function.arguments;
  try {
    args = JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    // shown as the model wrote it
  }
  return (
    <div className="tool-call" data-testid="tool-call">
      <div className="tool-call-head">
        calls <code>{call.function.name}</code>
      </div>
      <pre className="tool-args">{args}</pre>
      {open && (
        <div className="edit">
          <textarea
            data-testid="tool-result-input"
            placeholder={`The result of ${call.function.name} (e.g. JSON), sent to the model as the tool's reply`}
            rows={2}
            value={result}
            onChange={(e) => setResult(e.target.value)}
          />
          <div className="edit-actions">
            <button
              className="primary small"
              data-testid="tool-result-send"
              disabled={!props.onResult || result.trim() === ""}
              onClick={() => props.onResult?.(call.id, result)}
            >
              Send result
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

export const MessageView = memo(function MessageView(props: MessageProps) {
  const { m, streaming, measure } = props;
  const [editing, setEditing] = useState<string | null>(null);

  if (m.role === "user") {
    return (
      <div className="msg user" data-testid="user-message">
        <div className="msg-role">
          You
          {props.canEdit && editing === null && (
            <button className="link" onClick={() => setEditing(m.content)}>
              edit
            </button>
          )}
        </div>
        {editing === null ? (
          <div className="msg-body">{m.content}</div>
        ) : (
          <div className="edit">
            <textarea
              value={editing}
              autoFocus
              rows={Math.min(10, editing.split("\n").length + 1)}
              onChange={(e) => setEditing(e.target.value)}
            />
            <div className="edit-actions">
              <button
                className="primary small"
                data-testid="resend"
                disabled={editing.trim() === ""}
                onClick={() => {
                  props.onEdit?.(props.index, editing);
                  setEditing(null);
                }}
              >
                Resend
              </button>
              <button className="small" onClick={() => setEditing(null)}>
                Cancel
              </button>
            </div>
          </div>
        )}
      </div>
    );
  }

  if (m.role === "tool") {
    return (
      <div className="msg tool" data-testid="tool-message">
        <div className="msg-role">Tool result</div>
        <div className="msg-body">{m.content}</div>
      </div>
    );
  }

  const tokens = streaming ? (m.tokens ?? null) : displayTokens(m);
  const s = m.stats;
  return (
    <div
      className={`msg assistant${streaming ? " streaming" : ""}${m.lane ? ` lane-${m.lane}` : ""}`}
      data-testid="assistant-message"
      data-lane={m.lane}
    >
      <div className="msg-role">
        {m.lane ? (m.lane === "dense" ? "Dense" : "Sparse") : "Assistant"}
        {streaming && <span className="typing">generating</span>}
      </div>
      <ReplyBody
        tokens={tokens}
        content={m.content}
        measure={measure}
        diverge={props.diverge ?? -1}
        streaming={streaming}
      />
      {m.tool_calls?.map((call) => (
        <ToolCallCard
          key={call.id}
          call={call}
          open={props.unanswered?.includes(call.id) ?? false}
          onResult={props.onToolResult}
        />
      ))}
      {s && (
        <div className="msg-stats">
          <span>{s.tokens} tok</span>
          <span>{s.decodeTokensPerS.toFixed(1)} tok/s</span>
          <span>TTFT {s.ttftMs.toFixed(0)} ms</span>
          <span className={s.finishReason === "context_full" || s.finishReason === "aborted" ? "warn" : ""}>
            {s.finishReason}
          </span>
          {s.meanRecall !== undefined && <span>recall {s.meanRecall.toFixed(3)}</span>}
        </div>
      )}
    </div>
  );
});
