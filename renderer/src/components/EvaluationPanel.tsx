// Quality against k on a text of the user's (the host's `eval`, as `hire eval`): dense, then the
// live sparse settings at each k in the box, with perplexity, mean recall@k and the output layer's
// hit rate. Folded until opened; Stop (the chat's) ends a run.
import { useStore } from "zustand";
import { parseKs } from "../state/evaluation.js";
import { useStudio } from "./hooks.js";

const fmt = (v: number | null, digits: number) => (v === null || !Number.isFinite(v) ? "—" : v.toFixed(digits));

export function EvaluationPanel() {
  const studio = useStudio();
  const { evaluation, connection } = studio;
  const text = useStore(evaluation, (s) => s.text);
  const ksText = useStore(evaluation, (s) => s.ksText);
  const progress = useStore(evaluation, (s) => s.progress);
  const rows = useStore(evaluation, (s) => s.rows);
  const hasModel = useStore(connection, (s) => s.model !== null);
  const ks = parseKs(ksText);
  const running = progress !== null;
  return (
    <details className="panel evaluation" data-testid="evaluation">
      <summary className="panel-head">
        <h2>Quality against k</h2>
        <span className="hint">perplexity and recall on a text</span>
      </summary>
      <div className="form">
        <textarea
          className="schema"
          data-testid="eval-text"
          rows={5}
          placeholder="A text to score (a few hundred tokens of what you will use the model for)"
          value={text}
          onChange={(e) => evaluation.getState().setText(e.target.value)}
        />
        <label
          className="field"
          title="FFN k values (fractions of the neurons, or counts); the other settings stay as set"
        >
          <span className="label">k values</span>
          <input
            data-testid="eval-ks"
            value={ksText}
            onChange={(e) => evaluation.getState().setKsText(e.target.value)}
          />
        </label>
        {ks instanceof Error && <span className="hint error">{ks.message}</span>}
        <button
          className="primary small"
          data-testid="eval-run"
          disabled={!hasModel || running || text.trim() === "" || ks instanceof Error}
          onClick={() => void studio.runEvaluation()}
        >
          {running ? `Scoring… ${Math.round((100 * progress.done) / Math.max(1, progress.total))} %` : "Evaluate"}
        </button>
        {rows && (
          <table className="eval-table" data-testid="eval-table">
            <thead>
              <tr>
                <th>method</th>
                <th>k</th>
                <th>perplexity</th>
                <th>recall</th>
                <th>head hit</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r, i) => (
                <tr key={i}>
                  <td>{r.method}</td>
                  <td>{r.ffn_k ?? "—"}</td>
                  <td>{fmt(r.perplexity, 2)}</td>
                  <td>{fmt(r.mean_recall, 3)}</td>
                  <td>{fmt(r.head_argmax_hit_rate, 3)}</td>
                </tr>
              ))}
            </tbody>
            <tfoot>
              <tr>
                <td colSpan={5} className="hint">
                  {rows[0]?.tokens ?? 0} tokens scored per row; recall@k against the exact top-k
                </td>
              </tr>
            </tfoot>
          </table>
        )}
      </div>
    </details>
  );
}
