import { useStore } from "zustand";
import { useStudio } from "./hooks.js";

/** The one error box: what failed, the host's code, the file it names, the message. */
export function ErrorBox() {
  const { connection } = useStudio();
  const error = useStore(connection, (s) => s.error);
  if (!error) return null;
  return (
    <div className="error-box" data-testid="error" role="alert">
      <div className="error-head">
        <span className="error-code">{error.code}</span>
        <span className="error-context">{error.context} failed</span>
        <button className="icon-btn" title="Dismiss" onClick={() => connection.getState().clearError()}>
          ✕
        </button>
      </div>
      {error.file && (
        <div className="error-file">
          file: <code>{error.file}</code>
        </div>
      )}
      <div className="error-message">{error.message}</div>
    </div>
  );
}
