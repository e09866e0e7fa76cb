// One layer in detail (after a click on the map): the host sends this layer's predicted (approx)
// and, on audited tokens, exact scores with each token (`inspect.layer`). Audited: a scatter of
// approx vs exact, coloured hit (selected ∩ exact top-k), miss (exact top-k not selected), false
// candidate (computed exactly but not in the exact top-k). Otherwise: neurons sorted by approx score.
// Also the per-layer k override.
import { useState } from "react";
import { useStore } from "zustand";
import { resolveCount } from "../state/settings.js";
import { layerBytesText, selectedOf, type TelemetryState } from "../state/telemetry.js";
import { C } from "./colors.js";
import { useCanvasDraw, useStudio, type CanvasSize } from "./hooks.js";

const SELECTED = 1;
const CANDIDATE = 2;
const EXACT_TOP = 4;

function range(a: Float32Array): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (!(hi > lo)) return [lo === Infinity ? 0 : lo - 1, hi === -Infinity ? 1 : hi + 1];
  const pad = (hi - lo) * 0.04;
  return [lo - pad, hi + pad];
}

function drawDetail(ctx: CanvasRenderingContext2D, { width, height }: CanvasSize, t: TelemetryState, layer: number) {
  ctx.fillStyle = C.bg;
  ctx.fillRect(0, 0, width, height);
  ctx.font = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  ctx.textBaseline = "top";
  const entry = t.inspected;
  const ins = entry?.step.inspect;
  if (!entry || !ins || ins.layer !== layer) {
    ctx.fillStyle = C.dim;
    ctx.fillText(`waiting for the next token's scores of layer ${layer}…`, 8, 8);
    return;
  }
  const n = ins.approx.length;
  const flags = new Uint8Array(n);
  const sel = selectedOf(entry.step, layer);
  for (let j = 0; j < sel.length; j++) if (sel[j] < n) flags[sel[j]] |= SELECTED;
  for (let j = 0; j < ins.candidates.length; j++) if (ins.candidates[j] < n) flags[ins.candidates[j]] |= CANDIDATE;
  if (ins.exactTopK)
    for (let j = 0; j < ins.exactTopK.length; j++) if (ins.exactTopK[j] < n) flags[ins.exactTopK[j]] |= EXACT_TOP;
  const pad = { l: 8, r: 8, t: 20, b: 16 };
  const W = width - pad.l - pad.r;
  const H = height - pad.t - pad.b;
  ctx.fillStyle = C.dim;
  ctx.fillText(layerBytesText(entry.step, layer), pad.l + 12, pad.t + H + 3);
  ctx.fillStyle = C.text;
  const exact = ins.exact;

  if (exact && ins.exactTopK) {
    let hits = 0;
    let misses = 0;
    let falseCands = 0;
    for (let i = 0; i < n; i++) {
      const f = flags[i];
      if (f & EXACT_TOP) {
        if (f & SELECTED) hits++;
        else misses++;
      } else if (f & CANDIDATE) falseCands++;
    }
    const k = ins.exactTopK.length;
    ctx.fillText(
      `token #${entry.index} · hits ${hits} · misses ${misses} · false candidates ${falseCands} · recall ${k > 0 ? (hits / k).toFixed(3) : "—"}`,
      pad.l,
      4,
    );
    const [x0, x1] = range(ins.approx);
    const [y0, y1] = range(exact);
    const X = (v: number) => pad.l + ((v - x0) / (x1 - x0)) * W;
    const Y = (v: number) => pad.t + H - ((v - y0) / (y1 - y0)) * H;
    ctx.fillStyle = C.grid;
    ctx.fillRect(pad.l, pad.t + H, W, 1);
    ctx.fillRect(pad.l, pad.t, 1, H);
    const pass = (want: (f: number) => boolean, color: string, size: number) => {
      ctx.fillStyle = color;
      for (let i = 0; i < n; i++) {
        if (!want(flags[i])) continue;
        const a = ins.approx[i];
        const e = exact[i];
        if (!Number.isFinite(a) || !Number.isFinite(e)) continue;
        ctx.fillRect(X(a) - size / 2, Y(e) - size / 2, size, size);
      }
    };
    pass((f) => (f & (EXACT_TOP | CANDIDATE)) === 0, C.other, 2);
    pass((f) => (f & CANDIDATE) !== 0 && (f & EXACT_TOP) === 0, C.falseCandidate, 3);
    pass((f) => (f & EXACT_TOP) !== 0 && (f & SELECTED) === 0, C.miss, 3.5);
    pass((f) => (f & EXACT_TOP) !== 0 && (f & SELECTED) !== 0, C.hit, 3.5);
    ctx.fillStyle = C.dim;
    ctx.fillText("approx (predictor) score →", pad.l + W - 150, pad.t + H + 3);
    ctx.save();
    ctx.translate(pad.l + 10, pad.t + 4);
    ctx.fillText("↑ exact", 0, 0);
    ctx.restore();
    return;
  }

  // No exact scores on this token: neurons sorted by approx score, the top ones as bars.
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => ins.approx[b] - ins.approx[a]);
  const m = Math.min(n, Math.max(64, Math.min(Math.floor(W), ins.candidates.length * 3)));
  ctx.fillText(
    `token #${entry.index} · ${ins.candidates.length} candidates · ${sel.length} selected · top ${m} of ${n} by approx score (audit for hits/misses)`,
    pad.l,
    4,
  );
  let lo = Infinity;
  let hi = -Infinity;
  for (let j = 0; j < m; j++) {
    const v = ins.approx[order[j]];
    if (Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  lo = Math.min(0, lo);
  const span = hi > lo ? hi - lo : 1;
  const bw = W / m;
  for (let j = 0; j < m; j++) {
    const i = order[j];
    const v = ins.approx[i];
    if (!Number.isFinite(v)) continue;
    const f = flags[i];
    ctx.fillStyle = f & SELECTED ? C.selected : f & CANDIDATE ? C.falseCandidate : C.other;
    const h = ((v - lo) / span) * H;
    ctx.fillRect(pad.l + j * bw, pad.t + H - h, Math.max(1, bw - (bw > 3 ? 1 : 0)), h);
  }
}

export function LayerDetail() {
  const studio = useStudio();
  const { settings, telemetry, connection } = studio;
  const layer = useStore(settings, (s) => s.selectedLayer);
  const ffn = useStore(settings, (s) => s.sparsity.ffn);
  const neurons = useStore(connection, (s) => s.model?.neurons ?? 0);
  const audited = useStore(telemetry, (s) => s.inspected?.step.inspect?.exact != null);
  const [kText, setKText] = useState("");
  const ref = useCanvasDraw([telemetry], (ctx, size) => {
    if (layer !== null) drawDetail(ctx, size, telemetry.getState(), layer);
  });
  if (layer === null) return null;
  const override = ffn.perLayerK[layer];
  const k = override ?? ffn.k;
  const apply = () => {
    const v = Number(kText);
    if (!(v > 0) || (v > 1 && !Number.isInteger(v))) return;
    studio.updateSparsity({ ffn: { perLayerK: { [layer]: v } } });
    setKText("");
  };
  return (
    <div className="chart layer-detail" data-testid="layer-detail">
      <div className="chart-title">
        Layer {layer} <span className="dim">approx vs exact scores</span>
        <button className="icon-btn" title="Close" onClick={() => void studio.inspectLayer(null)}>
          ✕
        </button>
      </div>
      <canvas ref={ref} className="chart-canvas" style={{ height: 180 }} />
      <div className="legend">
        {audited ? (
          <>
            <span>
              <i style={{ background: C.hit }} />
              hit
            </span>
            <span>
              <i style={{ background: C.miss }} />
              miss
            </span>
            <span>
              <i style={{ background: C.falseCandidate }} />
              false candidate
            </span>
            <span>
              <i style={{ background: C.other }} />
              other
            </span>
          </>
        ) : (
          <>
            <span>
              <i style={{ background: C.selected }} />
              selected
            </span>
            <span>
              <i style={{ background: C.falseCandidate }} />
              candidate, not kept
            </span>
            <span>
              <i style={{ background: C.other }} />
              not computed
            </span>
          </>
        )}
      </div>
      <div className="layer-k">
        <span>
          k of layer {layer}: <b>{k}</b>
          {neurons > 0 && ` (${resolveCount(k, neurons)} of ${neurons})`}{" "}
          {override !== undefined ? "· override" : "· global"}
        </span>
        <input
          type="number"
          className="num"
          data-testid="layer-k"
          placeholder="fraction or count"
          min={0.001}
          step={0.01}
          value={kText}
          onChange={(e) => setKText(e.target.value)}
          onKeyDown={(e) => e.key === "Enter" && apply()}
        />
        <button className="small" onClick={apply} disabled={kText === ""}>
          Set
        </button>
        {override !== undefined && (
          <button
            className="small"
            title="Set this layer back to the global k"
            onClick={() => studio.updateSparsity({ ffn: { perLayerK: { [layer]: ffn.k } } })}
          >
            = global
          </button>
        )}
      </div>
    </div>
  );
}
