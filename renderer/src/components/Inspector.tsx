// The inspector: live numbers of the latest token, the layer × neuron map, recall and latency per
// layer, the layer detail panel, and trace export.
import { useStore } from "zustand";
import { formatBytes } from "../state/connection.js";
import { selectionSummary, windowTokensPerS } from "../state/telemetry.js";
import { download, useSampled, useStudio } from "./hooks.js";
import { LatencyBars } from "./LatencyBars.js";
import { LayerDetail } from "./LayerDetail.js";
import { LayerMap } from "./LayerMap.js";
import { RecallBars } from "./RecallBars.js";

const WINDOWS = [16, 64, 256, 1024];

function LiveStats() {
  const { telemetry } = useStudio();
  const live = useSampled(telemetry, (t) => {
    const step = t.latest?.step ?? null;
    return {
      count: t.count,
      tps: windowTokensPerS(t.window),
      ms: step?.ms ?? NaN,
      bytes: step?.bytes ?? NaN,
      dense: step?.denseBytes ?? NaN,
      selected: selectionSummary(step, t.neurons),
      method: step ? `${step.ffnMethod}${step.headMethod !== "dense" ? ` + ${step.headMethod} head` : ""}` : "—",
    };
  });
  const share = live.dense > 0 ? (100 * live.bytes) / live.dense : NaN;
  return (
    <div className="live-stats">
      <div className="stat">
        <span className="k">tokens/s</span>
        <span className="v" data-testid="tokens-per-s">
          {Number.isFinite(live.tps) ? live.tps.toFixed(1) : "—"}
        </span>
      </div>
      <div className="stat">
        <span className="k">ms/token</span>
        <span className="v">{Number.isFinite(live.ms) ? live.ms.toFixed(2) : "—"}</span>
      </div>
      <div className="stat" title="weight bytes read for the latest token vs the dense model">
        <span className="k">bytes/token vs dense</span>
        <span className="v">
          {Number.isFinite(live.bytes) ? `${formatBytes(live.bytes)} / ${formatBytes(live.dense)}` : "—"}
          {Number.isFinite(share) && <em> {share.toFixed(0)}%</em>}
        </span>
      </div>
      <div className="stat">
        <span className="k">tokens</span>
        <span className="v">{live.count}</span>
      </div>
      <div className="stat wide">
        <span className="k">{live.method}</span>
        <span className="v small" data-testid="selected-count">
          {live.selected}
        </span>
      </div>
    </div>
  );
}

export function Inspector() {
  const studio = useStudio();
  const window_ = useStore(studio.settings, (s) => s.frequencyWindow);
  const hasTrace = useStore(studio.telemetry, (s) => s.count > 0);
  const exportTrace = () => download(`hire-trace-${Date.now()}.json`, studio.exportTrace());
  return (
    <section className="panel inspector">
      <div className="panel-head">
        <h2>Inspector</h2>
        <div className="head-actions">
          <label className="inline">
            window
            <select value={window_} onChange={(e) => studio.setFrequencyWindow(Number(e.target.value))}>
              {WINDOWS.map((w) => (
                <option key={w} value={w}>
                  {w} tokens
                </option>
              ))}
            </select>
          </label>
          <button
            className="small"
            data-testid="export-trace"
            disabled={!hasTrace}
            onClick={exportTrace}
            title="Per-token, per-layer telemetry of the last reply as JSON"
          >
            Export trace
          </button>
        </div>
      </div>
      <LiveStats />
      <div className="chart">
        <div className="chart-title">
          Layer × neuron <span className="dim">rows: layers · columns: neurons (max-pooled)</span>
        </div>
        <LayerMap />
      </div>
      <LayerDetail />
      <RecallBars />
      <LatencyBars />
    </section>
  );
}
