// Sparsity controls. Every change goes to the host as a `sparsity.update` and applies from the next
// token (also mid-reply). The per-layer k override is in the layer detail panel.
import type { ReactNode } from "react";
import { useStore } from "zustand";
import {
  AUDIT_OPTIONS,
  FFN_METHOD_OPTIONS,
  HEAD_METHOD_OPTIONS,
  resolveCount,
  type PredictorSpec,
} from "../state/settings.js";
import type { DeepPartial, SparsitySettings } from "../../../core/host/protocol.js";
import { DEFAULT_LOWRANK_RANK, DEFAULT_QUANT_GROUP } from "../../../core/sparse/settings.js";
import { useStudio } from "./hooks.js";

const METHOD_HINT: Record<string, string> = {
  dense: "every neuron, every token",
  "topk-exact": "dense activations, exact top-k (the quality oracle)",
  hire: "predictor ranks neurons, k' = oversample·k rows exact, exact top-k kept",
  dip: "predictor-free input/GLU pruning (SwiGLU models)",
  "dip-ca": "DIP with a simulated LRU weight cache",
};

function PredictorField(props: {
  value: PredictorSpec;
  disabled?: boolean;
  testid: string;
  onChange: (p: PredictorSpec) => void;
}) {
  const { value: p, onChange } = props;
  const arg = p.kind === "lowrank" ? p.rank : p.groupSize;
  return (
    <span className="predictor">
      <select
        data-testid={props.testid}
        disabled={props.disabled}
        value={p.kind}
        onChange={(e) => {
          const kind = e.target.value;
          onChange(
            kind === "lowrank"
              ? { kind, rank: DEFAULT_LOWRANK_RANK }
              : { kind: kind as "int4" | "int8", groupSize: DEFAULT_QUANT_GROUP },
          );
        }}
      >
        <option value="int4">int4</option>
        <option value="int8">int8</option>
        <option value="lowrank">low-rank</option>
      </select>
      <input
        type="number"
        className="num narrow"
        disabled={props.disabled}
        title={p.kind === "lowrank" ? "rank" : "group size (multiple of 32)"}
        min={p.kind === "lowrank" ? 1 : 32}
        step={p.kind === "lowrank" ? 8 : 32}
        value={arg}
        onChange={(e) => {
          const n = Math.round(Number(e.target.value));
          if (!(n > 0)) return;
          onChange(p.kind === "lowrank" ? { kind: "lowrank", rank: n } : { kind: p.kind, groupSize: n });
        }}
      />
    </span>
  );
}

/** A labelled number input that reports only finite numbers (the callback decides if one is valid). */
function NumberField(props: {
  label: string;
  title?: string;
  testId?: string;
  min?: number;
  max?: number;
  step: number;
  disabled?: boolean;
  value: number;
  onValue: (n: number) => unknown;
  /** Shown after the input (a unit, a readout). */
  children?: ReactNode;
}) {
  return (
    <label className="field" title={props.title}>
      <span className="label">{props.label}</span>
      <input
        type="number"
        className="num"
        data-testid={props.testId}
        min={props.min}
        max={props.max}
        step={props.step}
        disabled={props.disabled}
        value={props.value}
        onChange={(e) => {
          const n = Number(e.target.value);
          if (e.target.value.trim() !== "" && Number.isFinite(n)) props.onValue(n);
        }}
      />
      {props.children}
    </label>
  );
}

export function SparsityPanel() {
  const studio = useStudio();
  const s = useStore(studio.settings, (st) => st.sparsity);
  const applying = useStore(studio.settings, (st) => st.applying);
  const model = useStore(studio.connection, (st) => st.model);
  const preparing = useStore(studio.connection, (st) => st.preparing);
  const update = (u: DeepPartial<SparsitySettings>) => studio.updateSparsity(u);
  // k is a share of each FFN: of a mixture's every expert, not of the layer's experts together.
  const neurons = model?.moe?.expertNeurons ?? model?.neurons ?? 0;
  const vocab = model?.vocab ?? 0;
  const ffnDense = s.ffn.method === "dense";
  const kFraction = s.ffn.k <= 1 ? s.ffn.k : neurons > 0 ? s.ffn.k / neurons : 1;
  return (
    <section className="panel sparsity">
      <div className="panel-head">
        <h2>Sparsity</h2>
        <span className={applying || preparing ? "badge busy" : "badge"}>
          {preparing
            ? `building ${preparing.stage} ${preparing.done}/${preparing.total}`
            : applying
              ? "applying…"
              : "live · next token"}
        </span>
      </div>
      <div className="form">
        <label className="field" title={METHOD_HINT[s.ffn.method]}>
          <span className="label">FFN method</span>
          <select
            data-testid="ffn-method"
            value={s.ffn.method}
            onChange={(e) => update({ ffn: { method: e.target.value as never } })}
          >
            {FFN_METHOD_OPTIONS.map((m) => (
              <option key={m} value={m} disabled={(m === "dip" || m === "dip-ca") && model !== null && !model.gatedFfn}>
                {m}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span className="label">FFN k</span>
          <input
            type="range"
            data-testid="ffn-k"
            min={0.01}
            max={1}
            step={0.01}
            value={kFraction}
            onChange={(e) => update({ ffn: { k: Number(e.target.value) } })}
          />
          <span className="readout" data-testid="ffn-k-value">
            {(kFraction * 100).toFixed(0)}%{neurons > 0 ? ` · ${resolveCount(s.ffn.k, neurons)}` : ""}
            {model?.moe ? " per expert" : ""}
          </span>
        </label>
        <NumberField
          title="HiRE computes oversample × k candidate rows exactly"
          label="Oversample"
          testId="oversample"
          min={1}
          max={32}
          step={0.5}
          disabled={s.ffn.method !== "hire"}
          value={s.ffn.oversample}
          onValue={(n) => n >= 1 && update({ ffn: { oversample: n } })}
        />
        <label className="field">
          <span className="label">Predictor</span>
          <PredictorField
            testid="predictor"
            value={s.ffn.predictor}
            disabled={s.ffn.method !== "hire"}
            onChange={(predictor) => update({ ffn: { predictor } })}
          />
        </label>
        {s.ffn.method === "dip-ca" && (
          <>
            <NumberField
              title="cache capacity as a fraction of each layer's neurons"
              label="Cache fraction"
              min={0.01}
              max={1}
              step={0.05}
              value={s.ffn.cacheFraction}
              onValue={(n) => update({ ffn: { cacheFraction: n } })}
            />
            <NumberField
              title="score factor for uncached neurons"
              label="Cache γ"
              min={0}
              max={1}
              step={0.05}
              value={s.ffn.cacheGamma}
              onValue={(n) => update({ ffn: { cacheGamma: n } })}
            />
          </>
        )}
        <div className="sep" />
        <label className="field">
          <span className="label">Output layer</span>
          <select
            data-testid="head-method"
            value={s.head.method}
            onChange={(e) => update({ head: { method: e.target.value as never } })}
          >
            {HEAD_METHOD_OPTIONS.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </label>
        <NumberField
          title="vocabulary rows kept: a fraction (≤ 1) or a count"
          label="Output k"
          testId="head-k"
          min={0.001}
          step={s.head.k <= 1 ? 0.01 : 16}
          disabled={s.head.method === "dense"}
          value={s.head.k}
          onValue={(n) => n > 0 && (n <= 1 || Number.isInteger(n)) && update({ head: { k: n } })}
        >
          <span className="readout">{vocab > 0 ? `of ${vocab}` : ""}</span>
        </NumberField>
        <NumberField
          label="Output oversample"
          min={1}
          max={64}
          step={0.5}
          disabled={s.head.method === "dense"}
          value={s.head.oversample}
          onValue={(n) => n >= 1 && update({ head: { oversample: n } })}
        />
        <label className="field">
          <span className="label">Output predictor</span>
          <PredictorField
            testid="head-predictor"
            value={s.head.predictor}
            disabled={s.head.method === "dense"}
            onChange={(predictor) => update({ head: { predictor } })}
          />
        </label>
        <div className="sep" />
        <NumberField
          title="DA-top-k: P shards each pick their local top-(k/P); 1 = global top-k"
          label="Shards P"
          testId="shards"
          min={1}
          max={64}
          step={1}
          disabled={ffnDense}
          value={s.shards}
          onValue={(n) => Number.isInteger(n) && n >= 1 && n <= 64 && update({ shards: n })}
        />
        <label className="field" title="compare with the dense computation (recall, output error)">
          <span className="label">Audit</span>
          <select
            data-testid="audit-every"
            value={String(s.auditEvery)}
            onChange={(e) => update({ auditEvery: Number(e.target.value) })}
          >
            {(AUDIT_OPTIONS as readonly number[])
              .concat(AUDIT_OPTIONS.includes(s.auditEvery as never) ? [] : [s.auditEvery])
              .map((n) => (
                <option key={n} value={String(n)}>
                  {n === 0 ? "off" : n === 1 ? "every token" : `every ${n}th token`}
                </option>
              ))}
          </select>
        </label>
      </div>
    </section>
  );
}
