// React bindings: the studio through context, stores through zustand's useStore, and helpers for
// values that change at token rate (sampled, never re-rendering faster than a few times a second).
import { createContext, useContext, useEffect, useRef, useState } from "react";
import type { StoreApi } from "zustand";
import type { Studio } from "../state/studio.js";

export const StudioContext = createContext<Studio | null>(null);

export function useStudio(): Studio {
  const s = useContext(StudioContext);
  if (!s) throw new Error("useStudio outside StudioContext");
  return s;
}

/** A value derived from a store, re-read at most every `ms` (for text that changes at token rate). */
export function useSampled<S, T>(store: StoreApi<S>, select: (s: S) => T, ms = 200): T {
  const [value, setValue] = useState(() => select(store.getState()));
  const selectRef = useRef(select);
  selectRef.current = select;
  useEffect(() => {
    let timer: number | null = null;
    const update = () => {
      timer = null;
      setValue(selectRef.current(store.getState()));
    };
    update();
    const unsub = store.subscribe(() => {
      if (timer === null) timer = window.setTimeout(update, ms);
    });
    return () => {
      unsub();
      if (timer !== null) window.clearTimeout(timer);
    };
  }, [store, ms]);
  return value;
}

export interface CanvasSize {
  /** CSS pixels. */
  width: number;
  height: number;
  /** Device pixels per CSS pixel. */
  dpr: number;
}

/** Anything with a zustand-style subscribe. */
export interface Subscribable {
  subscribe(cb: () => void): () => void;
}

/**
 * A canvas redrawn in requestAnimationFrame whenever one of `stores` changes, the canvas resizes or
 * the component re-renders: the token-rate path from the telemetry store to pixels, outside React's
 * render cycle. `draw` (the latest one) receives a context scaled to CSS pixels.
 */
export function useCanvasDraw(stores: Subscribable[], draw: (ctx: CanvasRenderingContext2D, size: CanvasSize) => void) {
  // A callback ref: the canvas may mount after the component (a panel that opens later).
  const [canvas, ref] = useState<HTMLCanvasElement | null>(null);
  const drawRef = useRef(draw);
  drawRef.current = draw;
  const requestRef = useRef<() => void>(() => undefined);
  const [a, b, c] = stores;
  useEffect(() => {
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    let frame = 0;
    const render = () => {
      frame = 0;
      const dpr = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (width === 0 || height === 0) return;
      const w = Math.round(width * dpr);
      const h = Math.round(height * dpr);
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      drawRef.current(ctx, { width, height, dpr });
    };
    const request = () => {
      if (frame === 0) frame = requestAnimationFrame(render);
    };
    requestRef.current = request;
    const unsubs = [a, b, c].filter((s): s is Subscribable => s !== undefined).map((s) => s.subscribe(request));
    const ro = new ResizeObserver(request);
    ro.observe(canvas);
    request();
    return () => {
      unsubs.forEach((u) => u());
      ro.disconnect();
      if (frame !== 0) cancelAnimationFrame(frame);
      requestRef.current = () => undefined;
    };
  }, [canvas, a, b, c]);
  // Props changed (a selected layer, a colour mode): draw again.
  useEffect(() => requestRef.current());
  return ref;
}

/** Save text as a file download. */
export function download(name: string, text: string, type = "application/json"): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
