// Colours shared by the canvases and the token marks (the CSS variables in styles.css match).
export const C = {
  bg: "#0d1015",
  panel: "#141922",
  grid: "#232a36",
  text: "#c9d1dc",
  dim: "#7d8796",
  accent: "#4da3ff",
  attention: "#5b8def",
  predictor: "#b07cf0",
  exact: "#f0a23c",
  down: "#43c59e",
  ffnDense: "#6c7a8f",
  output: "#ef6f8f",
  hit: "#43c59e",
  miss: "#ef5f5f",
  falseCandidate: "#f0b43c",
  selected: "#ffd166",
  other: "#4b5668",
} as const;

/** Selection frequency 0..1 → a dark-blue→cyan ramp, as [r, g, b]. */
export function freqRgb(f: number): [number, number, number] {
  if (!(f > 0)) return [16, 20, 27];
  const t = Math.min(1, Math.sqrt(f));
  return [Math.round(20 + 20 * t), Math.round(40 + 150 * t), Math.round(70 + 170 * t)];
}

/** 0 (bad) → 1 (good) as a red→amber→green CSS colour. */
export function qualityColor(q: number, alpha = 1): string {
  const t = Math.max(0, Math.min(1, q));
  const hue = 5 + 125 * t;
  return `hsla(${hue.toFixed(0)}, 70%, 48%, ${alpha})`;
}

/** Latency share 0 (fast) → 1 (slow) as a CSS colour. */
export function latencyColor(t: number, alpha = 1): string {
  return qualityColor(1 - t, alpha);
}

/** freqRgb sampled at 256 levels: [r, g, b] of level q at 3q. */
export const FREQ_LUT: Uint8Array = (() => {
  const lut = new Uint8Array(256 * 3);
  for (let q = 0; q < 256; q++) lut.set(freqRgb(q / 255), q * 3);
  return lut;
})();
