// Model bar: folder path (or a Hugging Face repo id), Load / Default model, recent models, the models
// in the Hugging Face cache, the estimate before loading, load progress, the loaded model and the
// compute backend, and the connection state.
import { useEffect } from "react";
import { useStore } from "zustand";
import type { ModelEstimate, ModelInfo, WeightChoice } from "../../../core/host/protocol.js";
import type { KvDtype } from "../../../core/backend/backend.js";
import { formatBytes, formatCount } from "../state/connection.js";
import { useStudio } from "./hooks.js";

export function ModelBar() {
  const studio = useStudio();
  const { connection } = studio;
  const model = useStore(connection, (s) => s.model);
  const loading = useStore(connection, (s) => s.loading);
  const estimate = useStore(connection, (s) => s.estimate);
  const estimateError = useStore(connection, (s) => s.estimateError);
  const recent = useStore(connection, (s) => s.recentModels);
  const cached = useStore(connection, (s) => s.cached);
  const defaultModel = useStore(connection, (s) => s.defaultModel);
  const backend = useStore(connection, (s) => s.backend);
  const gpus = useStore(connection, (s) => s.gpus);
  const crashed = useStore(connection, (s) => s.crashed);
  const path = useStore(connection, (s) => s.pathInput);
  const setPath = connection.getState().setPathInput;
  const kvCache = useStore(connection, (s) => s.kvCache);
  const weights = useStore(connection, (s) => s.weights);
  const contextLength = useStore(connection, (s) => s.contextLength);

  // The estimate (model.inspect) for the typed folder, shown before loading.
  useEffect(() => {
    const t = window.setTimeout(() => void studio.inspectModel(path), 350);
    return () => window.clearTimeout(t);
  }, [path, kvCache, weights, contextLength, studio]);

  const pick = window.hireBridge?.pickModelFolder;
  const load = () => void studio.loadModel(path);
  const pct = loading && loading.total > 0 ? (100 * loading.done) / loading.total : null;

  return (
    <header className="model-bar">
      <div className="brand">
        HiRE <span>Studio</span>
      </div>
      <div className="model-controls">
        <input
          className="path-input"
          data-testid="model-path"
          list="recent-models"
          placeholder="Model folder (config.json + *.safetensors) or a cached repo id (org/name)"
          value={path}
          spellCheck={false}
          onChange={(e) => setPath(e.target.value)}
          onKeyDown={(e) => e.key === "Enter" && path.trim() !== "" && load()}
        />
        <datalist id="recent-models">
          {recent.map((p) => (
            <option key={p} value={p} />
          ))}
          {cached?.models
            .filter((m) => m.problem === null && !recent.includes(m.repo))
            .map((m) => (
              <option key={m.repo} value={m.repo} />
            ))}
        </datalist>
        {pick && (
          <button
            onClick={() =>
              void pick().then((p) => {
                if (p) setPath(p);
              })
            }
          >
            Browse…
          </button>
        )}
        <input
          className="context-input"
          data-testid="context-length"
          type="number"
          min={1}
          step={1024}
          placeholder="ctx auto"
          title="Context length for the next load, in tokens (empty: the model's, capped at 4096). The KV cache is sized for it."
          value={contextLength ?? ""}
          disabled={!!loading}
          onChange={(e) => {
            const n = Math.floor(Number(e.target.value));
            connection.getState().setContextLength(e.target.value === "" || !(n >= 1) ? null : n);
          }}
        />
        <select
          data-testid="kv-cache"
          value={kvCache}
          disabled={!!loading}
          title="KV cache for the next load: f16 takes half the memory and reads half the bytes per token at long contexts, with keys and values rounded to about 3 significant digits"
          onChange={(e) => connection.getState().setKvCache(e.target.value as KvDtype)}
        >
          <option value="f32">KV f32</option>
          <option value="f16">KV f16</option>
        </select>
        <select
          data-testid="weights"
          value={weights}
          disabled={!!loading}
          title="Weights for the next load: as the file stores them, or every linear layer as int8 or int4 copies (groups of 32 with a scale each): a half or a quarter of bf16's memory and faster decoding, at llama.cpp's Q8_0 or Q4_0 error; CPU only. Auto: for a quantized GGUF file or an FP8, GPTQ, AWQ or bitsandbytes checkpoint, int4 for the matrices it stores in 4 bits (a GGUF's Q4_0, Q4_1 and Q4_K blocks, 4-bit GPTQ and AWQ codes, taken as they are) and int8 for the rest (its values kept within int8's rounding, where their import's bf16 takes two to four times the file): int4+int8; as in the file otherwise"
          onChange={(e) => connection.getState().setWeights(e.target.value as WeightChoice)}
        >
          <option value="auto">Weights auto</option>
          <option value="file">Weights as in file</option>
          <option value="int8">Weights int8 (½ memory)</option>
          <option value="int4">Weights int4 (¼ memory)</option>
        </select>
        <button className="primary" data-testid="load-model" disabled={!!loading || path.trim() === ""} onClick={load}>
          Load
        </button>
        <button
          data-testid="load-default"
          disabled={!!loading}
          title={defaultModel ?? "the host's built-in model"}
          onClick={() => {
            if (defaultModel) setPath(defaultModel);
            void studio.loadModel(defaultModel ?? undefined);
          }}
        >
          Default model
        </button>
        {recent.length > 0 && (
          <select className="recent" value="" onChange={(e) => e.target.value && setPath(e.target.value)}>
            <option value="">Recent…</option>
            {recent.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        )}
        {cached && cached.models.length > 0 && (
          <select
            className="recent"
            data-testid="hf-cache"
            value=""
            title={`Models in the Hugging Face cache (${cached.hub})`}
            onFocus={() => void studio.refreshCached()}
            onChange={(e) => e.target.value && setPath(e.target.value)}
          >
            <option value="">Hugging Face cache…</option>
            {cached.models.map((m) => (
              <option
                key={m.repo}
                value={m.repo}
                disabled={m.problem !== null}
                title={m.problem ? `${m.problem.code}: ${m.problem.message}` : m.path}
              >
                {m.repo} ·{" "}
                {m.problem
                  ? `cannot load (${m.problem.code})`
                  : `${m.architecture} · ${formatBytes(m.weightBytes)}${m.quantization ? ` · ${m.quantization}` : ""}${m.pytorch ? " · PyTorch" : ""}`}
              </option>
            ))}
          </select>
        )}
      </div>
      <div className="model-info">
        {loading ? (
          <div className="load-progress" data-testid="load-progress">
            <span>
              {loading.stage === "import"
                ? `Importing (once; dequantized into the cache) ${loading.path ?? ""}`
                : `Loading ${loading.stage === "start" ? "" : loading.stage} ${loading.path ?? ""}`}
            </span>
            <div className="progress">
              <div className={pct === null ? "bar indeterminate" : "bar"} style={{ width: `${pct ?? 30}%` }} />
            </div>
          </div>
        ) : model ? (
          <div className="loaded" title={model.path}>
            <span className="line">
              <span className="model-name" data-testid="model-name">
                {model.name}
              </span>
              <span className="dim">
                {" "}
                {model.architecture} · {formatCount(model.parameters)} · {dtypeText(model, model.quantizedFrom)} ·{" "}
                {model.layers}L ×{" "}
                {model.moe
                  ? `${model.moe.experts} experts of ${model.moe.expertNeurons} (${model.moe.perToken} a token)`
                  : `${model.neurons} neurons`}{" "}
                · ctx {model.contextLength} · KV {model.kvCache}
              </span>
            </span>
            {estimate && path.trim() !== "" && !sameLoad(estimate, model) ? (
              <Estimate e={estimate} prefix="Load → " />
            ) : estimateError && path.trim() !== "" ? (
              <span className="estimate bad" title={estimateError.message}>
                {estimateError.code}: {estimateError.message}
              </span>
            ) : (
              <MemoryLine model={model} />
            )}
          </div>
        ) : estimate && path.trim() !== "" ? (
          <div className="loaded">
            <span className="dim">No model loaded</span>
            <Estimate e={estimate} prefix="" />
          </div>
        ) : estimateError && path.trim() !== "" ? (
          <div className="estimate bad" title={estimateError.message}>
            {estimateError.code}: {estimateError.message}
          </div>
        ) : (
          <div className="dim">No model loaded</div>
        )}
      </div>
      <div className="host-info">
        <span className="backend" title={["compute backend", ...gpus].join("\n")}>
          {backend || "—"}
        </span>
        <ConnectionPill />
      </div>
      {crashed && (
        <div className="crash-banner">
          Engine stopped: {crashed}
          <button onClick={() => void studio.loadModel(path || undefined)}>Reload model</button>
        </div>
      )}
    </header>
  );
}

/** What loading the typed folder will cost (model.inspect), before loading it. */
/** The loaded model's memory line, whole in its tooltip too: a narrow window cuts the line itself short. */
function MemoryLine({ model: m }: { model: ModelInfo }) {
  const line = `weights ${formatBytes(m.weightBytes)} + KV ${formatBytes(m.kvCacheBytes)} · reads ${formatBytes(m.bytesPerToken)}/token dense`;
  const given = m.releasedBytes > 0 ? ` · ${formatBytes(m.releasedBytes)} given back` : "";
  return (
    <span className="dim" title={line + given}>
      {line}
      {given && (
        <span
          data-testid="released-bytes"
          title="HiRE reads its own copies of the FFN weights, so the file layout of the FFN weights is given back to the system"
        >
          {given}
        </span>
      )}
    </span>
  );
}

function Estimate({ e, prefix }: { e: ModelEstimate; prefix: string }) {
  return (
    <span className="estimate" data-testid="model-estimate" title={e.path}>
      {prefix}
      {e.architecture} · {formatCount(e.parameters)} · {dtypeText(e)} ·{" "}
      <b>{formatBytes(e.weightBytes + e.kvCacheBytes)}</b>{" "}
      <span className="dim">
        (weights {formatBytes(e.weightBytes)} + KV {formatBytes(e.kvCacheBytes)} {e.kvCache} @ {e.contextLength})
      </span>
    </span>
  );
}

/** Whether loading as estimated would give the loaded model again (same folder, weights, KV cache and context). */
function sameLoad(e: ModelEstimate, m: ModelInfo): boolean {
  return e.path === m.path && e.weights === m.weights && e.kvCache === m.kvCache && e.contextLength === m.contextLength;
}

/** The weights' element type: the file's, or int8 / int4 (int4+int8) copies of it (`from`: where a loaded model's came from). */
function dtypeText(e: ModelEstimate, from: string | null = null): string {
  return e.weights === "file" ? e.dtype : `${e.weights} (${from ?? `from ${e.dtype}`})`;
}

function ConnectionPill() {
  const { connection } = useStudio();
  const status = useStore(connection, (s) => s.status);
  const transport = useStore(connection, (s) => s.transport);
  const text =
    status === "open" ? "connected" : status === "connecting" ? "connecting…" : "disconnected, reconnecting…";
  return (
    <span className={`conn conn-${status}`} data-testid="connection-status" title={`transport: ${transport}`}>
      <i />
      {text}
    </span>
  );
}
