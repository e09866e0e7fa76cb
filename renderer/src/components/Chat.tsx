// The chat: system prompt, messages (A/B pairs side by side), the composer with Send / Stop /
// Regenerate / A/B, and the context usage with its policy.
import { useCallback, useEffect, useLayoutEffect, useRef, useState, type ReactNode } from "react";
import { useStore } from "zustand";
import type { StoredMessage } from "../../../core/host/protocol.js";
import { firstDivergence, unansweredCalls } from "../state/conversations.js";
import type { TokenMeasure } from "../state/settings.js";
import { useStudio } from "./hooks.js";
import { MessageView } from "./MessageView.js";

const MEASURES: [TokenMeasure, string][] = [
  ["none", "none"],
  ["recall", "recall"],
  ["divergence", "divergence from dense"],
  ["headMass", "output-layer mass"],
  ["latency", "latency"],
];

export function Chat() {
  const studio = useStudio();
  const { conversations, settings, connection } = studio;
  const conv = useStore(conversations, (s) => s.current);
  const streaming = useStore(conversations, (s) => s.streaming);
  const comparing = useStore(conversations, (s) => s.comparing);
  const context = useStore(conversations, (s) => s.context);
  const measure = useStore(settings, (s) => s.tokenMeasure);
  const hasModel = useStore(connection, (s) => s.model !== null);
  const orphan = useStore(connection, (s) => s.orphanGeneration);
  const [prompt, setPrompt] = useState("");
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const evaluating = useStore(studio.evaluation, (s) => s.requestId !== null);
  const busy = streaming !== null || comparing || evaluating;
  const onEdit = useCallback(
    (index: number, text: string) => {
      stick.current = true;
      void studio.editAndResend(index, text);
    },
    [studio],
  );
  const onToolResult = useCallback(
    (callId: string, result: string) => {
      stick.current = true;
      void studio.sendToolResult(callId, result);
    },
    [studio],
  );

  // Follow the streaming reply while the view is at the bottom.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [conv]);
  useEffect(() => {
    stick.current = true;
  }, [conv.id]);

  const send = () => {
    // A reply format that cannot be sent keeps the typed message where it is.
    if (busy || prompt.trim() === "" || !studio.replyFormatOk()) return;
    const text = prompt;
    setPrompt("");
    stick.current = true;
    void studio.send(text);
  };
  const compare = () => {
    if (!studio.replyFormatOk()) return;
    const text = prompt;
    setPrompt("");
    stick.current = true;
    void studio.compare(text);
  };
  const lastUser = conv.messages.map((m) => m.role).lastIndexOf("user");
  const hasReplyAfterUser = lastUser >= 0 && lastUser < conv.messages.length - 1;

  const rows: ReactNode[] = [];
  const msgs = conv.messages;
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    const isStreaming = streaming?.index === i;
    if (m.lane === "dense" && m.role === "assistant") {
      const next: StoredMessage | undefined = msgs[i + 1]?.lane === "sparse" ? msgs[i + 1] : undefined;
      const done =
        next && streaming?.index !== i + 1 && next.tokens ? firstDivergence(m.tokens ?? [], next.tokens) : -2;
      rows.push(
        <div className="ab-pair" key={i} data-testid="ab-pair">
          <div className="ab-head">
            A/B · same prompt, dense vs sparse
            {done === -1 && <span className="same"> · identical</span>}
            {done >= 0 && (
              <span className="diff" data-testid="ab-divergence">
                {" "}
                · diverge at token {done}
              </span>
            )}
          </div>
          <div className="ab-cols">
            <MessageView m={m} index={i} streaming={isStreaming} measure={measure} diverge={done} canEdit={false} />
            {next ? (
              <MessageView
                m={next}
                index={i + 1}
                streaming={streaming?.index === i + 1}
                measure={measure}
                diverge={done}
                canEdit={false}
              />
            ) : (
              <div className="msg assistant pending-lane">sparse: waiting for the dense lane…</div>
            )}
          </div>
        </div>,
      );
      if (next) i++;
      continue;
    }
    rows.push(
      <MessageView
        key={i}
        m={m}
        index={i}
        streaming={isStreaming}
        measure={measure}
        canEdit={!busy && hasModel}
        onEdit={onEdit}
        {...(m.tool_calls && {
          unanswered: unansweredCalls(conv, i),
          ...(!busy && hasModel && { onToolResult }),
        })}
      />,
    );
  }

  const usedPct = context ? Math.min(100, (100 * context.used) / Math.max(1, context.length)) : 0;

  return (
    <section className="chat">
      <div className="chat-head">
        <h1 title={conv.title}>{conv.title}</h1>
        <label className="inline">
          colour tokens by
          <select
            data-testid="token-measure"
            value={measure}
            onChange={(e) => settings.getState().setTokenMeasure(e.target.value as TokenMeasure)}
          >
            {MEASURES.map(([v, label]) => (
              <option key={v} value={v}>
                {label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <details className="system" open={conv.system !== ""}>
        <summary>System prompt{conv.system ? "" : " (none)"}</summary>
        <textarea
          data-testid="system-prompt"
          placeholder="You are a helpful assistant."
          value={conv.system}
          disabled={busy}
          rows={2}
          onChange={(e) => studio.setSystem(e.target.value)}
        />
      </details>
      <div
        className="messages"
        ref={scroller}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        {msgs.length === 0 && (
          <div className="empty-chat">
            {hasModel
              ? "Type a message below. The inspector on the right shows each token's sparsity live."
              : "Load a model to start: a folder path above, or Default model."}
          </div>
        )}
        {rows}
        {streaming?.prefill && (
          <div className="prefill-note">
            prefill {streaming.prefill.promptTokens} tokens ({streaming.prefill.reusedTokens} reused) in{" "}
            {streaming.prefill.ms.toFixed(1)} ms
          </div>
        )}
      </div>
      {context?.finishReason === "context_full" && (
        <div className="notice" data-testid="context-full">
          Context full: start a new conversation or edit earlier messages.
        </div>
      )}
      <div className="composer">
        <textarea
          data-testid="prompt-input"
          placeholder={hasModel ? "Message (Enter to send, Shift+Enter for a new line)" : "Load a model first"}
          value={prompt}
          rows={3}
          onChange={(e) => setPrompt(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              send();
            }
          }}
        />
        <div className="composer-actions">
          {busy || orphan !== null ? (
            <button className="danger wide" data-testid="stop" onClick={() => void studio.stop()}>
              Stop
            </button>
          ) : (
            <button
              className="primary wide"
              data-testid="send"
              disabled={!hasModel || prompt.trim() === ""}
              onClick={send}
            >
              Send
            </button>
          )}
          <button
            data-testid="regenerate"
            disabled={busy || !hasModel || !hasReplyAfterUser}
            onClick={() => void studio.regenerate()}
            title="Replace the last reply"
          >
            Regenerate
          </button>
          <button
            data-testid="ab-compare"
            disabled={busy || !hasModel || (prompt.trim() === "" && lastUser < 0)}
            onClick={compare}
            title="Run the prompt (or the last user message) dense, then with the current sparsity, side by side"
          >
            A/B
          </button>
        </div>
      </div>
      <div
        className="context-usage"
        title="The context window holds the whole conversation. When it is full, generation stops (finish reason context_full); nothing is truncated silently."
      >
        <span>context</span>
        <div className="progress small">
          <div className={usedPct > 90 ? "bar warn" : "bar"} style={{ width: `${usedPct}%` }} />
        </div>
        <span data-testid="context-usage">{context ? `${context.used} / ${context.length} tokens` : "—"}</span>
        <span className="dim">when full, generation stops</span>
      </div>
    </section>
  );
}
