// Conversations the host keeps: new, open, delete, export.
import { useStore } from "zustand";
import { exportJson } from "../state/conversations.js";
import { download, useStudio } from "./hooks.js";

function ago(t: number): string {
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return "now";
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function ConversationList() {
  const studio = useStudio();
  const { conversations } = studio;
  const list = useStore(conversations, (s) => s.list);
  const currentId = useStore(conversations, (s) => s.current.id);
  const busy = useStore(conversations, (s) => s.streaming !== null || s.comparing);

  const exportCurrent = () => {
    const c = conversations.getState().current;
    download(`${c.title.replace(/[^\w.-]+/g, "_").slice(0, 40) || "conversation"}.json`, exportJson(c));
  };

  return (
    <section className="panel conversations">
      <div className="panel-head">
        <h2>Conversations</h2>
        <div className="head-actions">
          <button className="small" title="Export the open conversation as JSON" onClick={exportCurrent}>
            Export
          </button>
          <button
            className="small primary"
            data-testid="new-conversation"
            disabled={busy}
            onClick={() => studio.newConversation()}
          >
            New
          </button>
        </div>
      </div>
      <ul className="conv-list">
        {list.length === 0 && <li className="empty">No saved conversations</li>}
        {list.map((c) => (
          <li
            key={c.id}
            className={c.id === currentId ? "conv active" : "conv"}
            data-testid="conversation-item"
            onClick={() => void studio.selectConversation(c.id)}
            title={c.title}
          >
            <span className="conv-title">{c.title}</span>
            <span className="conv-meta">
              {c.messages} msg · {ago(c.updatedAt)}
            </span>
            <button
              className="icon-btn del"
              title="Delete"
              disabled={busy && c.id === currentId}
              onClick={(e) => {
                e.stopPropagation();
                if (window.confirm(`Delete "${c.title}"?`)) void studio.deleteConversation(c.id);
              }}
            >
              ✕
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}
