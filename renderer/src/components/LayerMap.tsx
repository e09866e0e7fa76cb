// Layer × neuron map: one row per layer, neurons max-pooled into pixel-wide bins. Colour: selected
// on the latest token (bright) over the selection frequency in the last N tokens (blue → cyan).
// Drawn from the telemetry store in requestAnimationFrame; a 1-pixel-per-bin image scaled up, so
// 24+ layers × 8k+ neurons cost one pass over the frequencies per frame. A mixture of experts' row is
// its experts side by side (then its shared expert), with a line between two experts where they are
// at least a few pixels wide.
import type { ModelInfo } from "../../../core/host/protocol.js";
import { useRef, useState } from "react";
import { useStore } from "zustand";
import { forSelected, type TelemetryState } from "../state/telemetry.js";
import { C, FREQ_LUT } from "./colors.js";
import { useCanvasDraw, useStudio, type CanvasSize } from "./hooks.js";

const GUTTER = 28;
const SEL: [number, number, number] = [255, 209, 102];

interface Scratch {
  canvas: HTMLCanvasElement;
  img: ImageData | null;
  maxF: Float32Array;
  now: Uint16Array;
}

function drawMap(
  ctx: CanvasRenderingContext2D,
  { width, height, dpr }: CanvasSize,
  t: TelemetryState,
  selectedLayer: number | null,
  scratch: Scratch,
  moe: ModelInfo["moe"],
): void {
  ctx.fillStyle = C.bg;
  ctx.fillRect(0, 0, width, height);
  const L = t.layers;
  const N = t.neurons;
  ctx.font = "10px ui-monospace, SFMono-Regular, Menlo, monospace";
  if (L === 0 || N === 0) {
    ctx.fillStyle = C.dim;
    ctx.fillText("load a model to see its layers", GUTTER, height / 2);
    return;
  }
  const mapW = width - GUTTER;
  const bins = Math.max(1, Math.min(N, Math.floor(mapW * dpr)));
  if (!scratch.img || scratch.img.width !== bins || scratch.img.height !== L) {
    scratch.img = new ImageData(bins, L);
    scratch.canvas.width = bins;
    scratch.canvas.height = L;
  }
  if (scratch.maxF.length !== bins) {
    scratch.maxF = new Float32Array(bins);
    scratch.now = new Uint16Array(bins);
  }
  const { img, maxF, now } = scratch;
  const px = img.data;
  const latest = t.latest?.step ?? null;
  const scale = bins / N;
  /** 1 / neurons per bin. */
  const inv = 1 / Math.ceil(N / bins);
  for (let l = 0; l < L; l++) {
    maxF.fill(0);
    now.fill(0);
    const freq = t.window.freq[l];
    for (let i = 0; i < N; i++) {
      const b = (i * scale) | 0;
      if (freq[i] > maxF[b]) maxF[b] = freq[i];
    }
    if (latest) forSelected(latest, l, N, (i) => now[(i * scale) | 0]++);
    let o = l * bins * 4;
    for (let b = 0; b < bins; b++, o += 4) {
      const f = maxF[b];
      const q = f > 0 ? 3 * Math.max(1, Math.min(255, Math.round(f * 255))) : 0;
      const r = FREQ_LUT[q];
      const g = FREQ_LUT[q + 1];
      const bl = FREQ_LUT[q + 2];
      if (now[b]) {
        // Any selected neuron lights the bin; how brightly says how many of its neurons are.
        const a = 0.45 + 0.5 * Math.min(1, now[b] * inv);
        px[o] = (r * (1 - a) + SEL[0] * a) | 0;
        px[o + 1] = (g * (1 - a) + SEL[1] * a) | 0;
        px[o + 2] = (bl * (1 - a) + SEL[2] * a) | 0;
      } else {
        px[o] = r;
        px[o + 1] = g;
        px[o + 2] = bl;
      }
      px[o + 3] = 255;
    }
  }
  const off = scratch.canvas.getContext("2d");
  if (!off) return;
  off.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  const rowH = height / L;
  ctx.drawImage(scratch.canvas, 0, 0, bins, L, GUTTER, 0, mapW, height);
  if (moe && moe.expertNeurons * (mapW / N) >= 4) {
    ctx.fillStyle = C.bg;
    for (let e = 1; e <= moe.experts; e++) {
      if (e === moe.experts && moe.sharedNeurons === 0) break;
      ctx.fillRect(GUTTER + Math.round((e * moe.expertNeurons * mapW) / N) - 0.5, 0, 1, height);
    }
  }
  // Row separators, layer labels, the selected layer.
  if (rowH >= 6) {
    ctx.fillStyle = C.bg;
    for (let l = 1; l < L; l++) ctx.fillRect(GUTTER, Math.round(l * rowH) - 0.5, mapW, 1);
  }
  ctx.fillStyle = C.dim;
  ctx.textBaseline = "middle";
  const every = Math.max(1, Math.ceil(11 / rowH));
  for (let l = 0; l < L; l += every) ctx.fillText(String(l), 4, (l + 0.5) * rowH);
  if (selectedLayer !== null && selectedLayer < L) {
    ctx.strokeStyle = C.accent;
    ctx.lineWidth = 1.5;
    ctx.strokeRect(GUTTER + 0.75, selectedLayer * rowH + 0.75, mapW - 1.5, Math.max(2, rowH - 1.5));
  }
  if (latest && latest.selected.length === 0) {
    ctx.fillStyle = "rgba(13,16,21,0.75)";
    ctx.fillRect(GUTTER + 8, height / 2 - 10, 190, 20);
    ctx.fillStyle = C.text;
    ctx.fillText(`${latest.ffnMethod} FFN: no neuron selection`, GUTTER + 14, height / 2);
  }
}

/** A neuron of the map as a user knows it: a dense FFN's index, or a mixture's expert and index in it. */
function neuronName(n: number, moe: ModelInfo["moe"]): string {
  if (!moe) return `neuron ${n}`;
  const e = Math.floor(n / moe.expertNeurons);
  if (e < moe.experts) return `expert ${e} · neuron ${n - e * moe.expertNeurons}`;
  return `shared expert · neuron ${n - moe.experts * moe.expertNeurons}`;
}

export function LayerMap() {
  const studio = useStudio();
  const { telemetry, settings } = studio;
  const layers = useStore(telemetry, (s) => s.layers);
  const neurons = useStore(telemetry, (s) => s.neurons);
  const selectedLayer = useStore(settings, (s) => s.selectedLayer);
  const moe = useStore(studio.connection, (s) => s.model?.moe ?? null);
  const scratch = useRef<Scratch | null>(null);
  const [hover, setHover] = useState<string>("");
  const ref = useCanvasDraw([telemetry], (ctx, size) => {
    scratch.current ??= {
      canvas: document.createElement("canvas"),
      img: null,
      maxF: new Float32Array(0),
      now: new Uint16Array(0),
    };
    drawMap(ctx, size, telemetry.getState(), selectedLayer, scratch.current, moe);
  });

  const at = (e: React.MouseEvent<HTMLCanvasElement>) => {
    const r = e.currentTarget.getBoundingClientRect();
    const x = e.clientX - r.left - GUTTER;
    const y = e.clientY - r.top;
    if (layers === 0 || x < 0) return null;
    const layer = Math.min(layers - 1, Math.floor((y / r.height) * layers));
    const n0 = Math.floor((x / (r.width - GUTTER)) * neurons);
    return { layer, neuron: Math.max(0, Math.min(neurons - 1, n0)) };
  };
  const height = Math.max(96, Math.min(360, layers * 14));

  return (
    <div className="layer-map-wrap">
      <canvas
        ref={ref}
        className="layer-map"
        data-testid="layer-map"
        style={{ height }}
        onClick={(e) => {
          const p = at(e);
          if (p) void studio.inspectLayer(p.layer === selectedLayer ? null : p.layer);
        }}
        onMouseMove={(e) => {
          const p = at(e);
          if (!p) return setHover("");
          const f = telemetry.getState().window.freq[p.layer]?.[p.neuron] ?? 0;
          setHover(`layer ${p.layer} · ${neuronName(p.neuron, moe)} · freq ${(f * 100).toFixed(0)}%`);
        }}
        onMouseLeave={() => setHover("")}
      />
      <div className="map-legend">
        <span className="sw now" /> selected now
        <span className="sw freq" /> frequency over window
        <span className="dim">{hover || "click a layer for its scores"}</span>
      </div>
    </div>
  );
}
