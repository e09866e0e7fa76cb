// Latency per layer, stacked: attention / predictor / exact rows / down product (dense FFN time
// when the method reports no split), then the output layer; means over the frequency window.
import type { TelemetryState } from "../state/telemetry.js";
import { C } from "./colors.js";
import { useCanvasDraw, useStudio, type CanvasSize } from "./hooks.js";

const LEFT = 34;
const BOTTOM = 14;
const PARTS = [
  ["attention", C.attention],
  ["predictor", C.predictor],
  ["exact rows", C.exact],
  ["down", C.down],
  ["FFN other", C.ffnDense],
  ["output layer", C.output],
] as const;

const fin = (v: number) => (Number.isFinite(v) && v > 0 ? v : 0);

/** Mean per-layer [attention, predictor, exact, down, rest-of-FFN] and output-layer ms over the window. */
export function latencyMeans(t: TelemetryState): { layers: Float64Array[]; output: number; n: number } {
  const L = t.layers;
  const layers = Array.from({ length: L }, () => new Float64Array(5));
  let output = 0;
  let n = 0;
  for (const e of t.window.ring) {
    if (!e) continue;
    const s = e.step;
    n++;
    output += fin(s.outputMs);
    for (let l = 0; l < L && l < s.attentionMs.length; l++) {
      const a = layers[l];
      const p = fin(s.predictorMs[l]);
      const x = fin(s.exactMs[l]);
      const d = fin(s.downMs[l]);
      a[0] += fin(s.attentionMs[l]);
      a[1] += p;
      a[2] += x;
      a[3] += d;
      a[4] += Math.max(0, fin(s.ffnMs[l]) - p - x - d);
    }
  }
  if (n > 0) {
    for (const a of layers) for (let i = 0; i < 5; i++) a[i] /= n;
    output /= n;
  }
  return { layers, output, n };
}

function drawLatency(ctx: CanvasRenderingContext2D, { width, height }: CanvasSize, t: TelemetryState): void {
  ctx.fillStyle = C.bg;
  ctx.fillRect(0, 0, width, height);
  const { layers, output, n } = latencyMeans(t);
  const L = layers.length;
  ctx.font = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  if (L === 0 || n === 0) {
    ctx.fillStyle = C.dim;
    ctx.fillText("no tokens yet", LEFT, height / 2);
    return;
  }
  let max = output;
  for (const a of layers) max = Math.max(max, a[0] + a[1] + a[2] + a[3] + a[4]);
  max = max > 0 ? max * 1.1 : 1;
  const plotH = height - BOTTOM - 8;
  const y = (v: number) => 8 + plotH * (1 - v / max);
  ctx.textBaseline = "middle";
  for (const g of [0, max / 2, max / 1.1]) {
    ctx.fillStyle = C.grid;
    ctx.fillRect(LEFT, Math.round(y(g)), width - LEFT, 1);
    ctx.fillStyle = C.dim;
    ctx.fillText(g < 1 ? g.toFixed(2) : g.toFixed(1), 2, y(g));
  }
  const colW = (width - LEFT) / (L + 1.5);
  for (let l = 0; l <= L; l++) {
    const x = LEFT + l * colW + (l === L ? colW * 0.5 : 0) + colW * 0.1;
    const w = Math.max(1, colW * 0.8);
    if (l === L) {
      ctx.fillStyle = C.output;
      ctx.fillRect(x, y(output), w, y(0) - y(output));
      break;
    }
    let base = 0;
    const a = layers[l];
    const order = [0, 1, 2, 3, 4];
    for (const i of order) {
      if (a[i] <= 0) continue;
      ctx.fillStyle = PARTS[i][1];
      ctx.fillRect(x, y(base + a[i]), w, y(base) - y(base + a[i]));
      base += a[i];
    }
  }
  ctx.fillStyle = C.dim;
  ctx.textBaseline = "alphabetic";
  const every = Math.max(1, Math.ceil(16 / colW));
  for (let l = 0; l < L; l += every) ctx.fillText(String(l), LEFT + l * colW + colW * 0.2, height - 2);
  ctx.fillText("out", LEFT + (L + 0.5) * colW, height - 2);
}

export function LatencyBars() {
  const { telemetry } = useStudio();
  const ref = useCanvasDraw([telemetry], (ctx, size) => drawLatency(ctx, size, telemetry.getState()));
  return (
    <div className="chart latency" data-testid="latency-bars">
      <div className="chart-title">
        Latency per layer <span className="dim">ms, mean over the window</span>
      </div>
      <canvas ref={ref} className="chart-canvas" style={{ height: 120 }} />
      <div className="legend">
        {PARTS.map(([name, color]) => (
          <span key={name}>
            <i style={{ background: color }} />
            {name}
          </span>
        ))}
      </div>
    </div>
  );
}
