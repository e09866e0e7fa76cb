// Recall@k per layer: the latest audited token (bright) over the generation's running mean (dim).
import { useStore } from "zustand";
import { hasRecall, type TelemetryState } from "../state/telemetry.js";
import { C } from "./colors.js";
import { useCanvasDraw, useStudio, type CanvasSize } from "./hooks.js";

const LEFT = 28;
const BOTTOM = 14;

function drawRecall(ctx: CanvasRenderingContext2D, { width, height }: CanvasSize, t: TelemetryState): void {
  ctx.fillStyle = C.bg;
  ctx.fillRect(0, 0, width, height);
  const L = t.layers;
  const plotH = height - BOTTOM - 8;
  const y = (v: number) => 8 + plotH * (1 - v);
  ctx.font = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  ctx.textBaseline = "middle";
  for (const g of [0, 0.5, 0.9, 1]) {
    ctx.fillStyle = C.grid;
    ctx.fillRect(LEFT, Math.round(y(g)), width - LEFT, 1);
    ctx.fillStyle = C.dim;
    if (g !== 0.9 || plotH > 160) ctx.fillText(g.toFixed(1), 4, y(g));
  }
  if (L === 0) return;
  const colW = (width - LEFT) / L;
  const latest = t.latest?.step;
  const current = latest && latest.audited ? latest.recall : null;
  for (let l = 0; l < L; l++) {
    const x = LEFT + l * colW;
    const w = Math.max(1, colW * 0.8);
    const mean = t.meanRecall[l];
    if (Number.isFinite(mean)) {
      ctx.fillStyle = "rgba(77,163,255,0.35)";
      ctx.fillRect(x + colW * 0.1, y(mean), w, y(0) - y(mean));
    }
    const r = current ? current[l] : NaN;
    if (Number.isFinite(r)) {
      ctx.fillStyle = C.accent;
      ctx.fillRect(x + colW * 0.3, y(r), Math.max(1, colW * 0.4), y(0) - y(r));
    }
  }
  ctx.fillStyle = C.dim;
  ctx.textBaseline = "alphabetic";
  const every = Math.max(1, Math.ceil(16 / colW));
  for (let l = 0; l < L; l += every) ctx.fillText(String(l), LEFT + l * colW + colW * 0.2, height - 2);
}

export function RecallBars() {
  const { telemetry, settings } = useStudio();
  const any = useStore(telemetry, (s) => hasRecall(s));
  const audit = useStore(settings, (s) => s.sparsity.auditEvery);
  const ref = useCanvasDraw([telemetry], (ctx, size) => drawRecall(ctx, size, telemetry.getState()));
  return (
    <div className="chart recall" data-testid="recall-bars">
      <div className="chart-title">
        Recall@k per layer <span className="dim">bright: this token · dim: mean over this reply</span>
      </div>
      <div className="canvas-wrap">
        <canvas ref={ref} className="chart-canvas" style={{ height: 110 }} />
        {!any && (
          <div className="chart-hint" data-testid="audit-hint">
            {audit === 0 ? "audit off: set Audit to measure recall against the dense top-k" : "no audited token yet"}
          </div>
        )}
      </div>
    </div>
  );
}
