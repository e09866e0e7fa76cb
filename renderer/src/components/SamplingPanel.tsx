// Sampling: temperature, top-p, top-k, min-p, repetition, presence and frequency penalties, seed, max tokens, for reasoning
// models (a chat template reading enable_thinking) whether they think first, and the reply's format
// (free text, any JSON object, or JSON following a schema: structured output), and the tools the model may call.
import { useStore } from "zustand";
import {
  replySchema,
  replyTools,
  type ReplyFormat,
  type SamplingPanel as Sampling,
  type ToolChoice,
} from "../state/settings.js";
import { useStudio } from "./hooks.js";

interface FieldSpec {
  key: keyof Sampling;
  label: string;
  min: number;
  max: number;
  step: number;
  hint: string;
  slider?: boolean;
}

const FIELDS: FieldSpec[] = [
  { key: "temperature", label: "Temperature", min: 0, max: 2, step: 0.05, hint: "0 = greedy", slider: true },
  { key: "topP", label: "Top-p", min: 0, max: 1, step: 0.01, hint: "1 = off", slider: true },
  { key: "topK", label: "Top-k", min: 0, max: 1000, step: 1, hint: "0 = off" },
  { key: "minP", label: "Min-p", min: 0, max: 1, step: 0.01, hint: "0 = off", slider: true },
  { key: "repetitionPenalty", label: "Repetition penalty", min: 1, max: 2, step: 0.01, hint: "1 = off", slider: true },
  { key: "presencePenalty", label: "Presence penalty", min: -2, max: 2, step: 0.05, hint: "0 = off", slider: true },
  { key: "frequencyPenalty", label: "Frequency penalty", min: -2, max: 2, step: 0.05, hint: "0 = off", slider: true },
  { key: "seed", label: "Seed", min: 0, max: 2 ** 31 - 1, step: 1, hint: "" },
  { key: "maxTokens", label: "Max tokens", min: 1, max: 100000, step: 1, hint: "" },
];

/** A box of JSON (a schema, a list of tools) and, under it, what is wrong with it. */
function JsonBox(props: { testId: string; text: string; onChange: (text: string) => void; error: Error | null }) {
  return (
    <>
      <textarea
        className="schema"
        data-testid={props.testId}
        spellCheck={false}
        rows={8}
        value={props.text}
        onChange={(e) => props.onChange(e.target.value)}
      />
      {props.error && (
        <span className="hint error" data-testid={`${props.testId}-error`}>
          {props.error.message}
        </span>
      )}
    </>
  );
}

export function SamplingPanel() {
  const { settings, connection } = useStudio();
  const sampling = useStore(settings, (s) => s.sampling);
  const thinking = useStore(settings, (s) => s.thinking);
  const thinkingSwitch = useStore(connection, (s) => s.model?.thinkingSwitch ?? false);
  const replyFormat = useStore(settings, (s) => s.replyFormat);
  const schemaText = useStore(settings, (s) => s.schemaText);
  const schema = replySchema(replyFormat, schemaText);
  const toolChoice = useStore(settings, (s) => s.toolChoice);
  const toolsText = useStore(settings, (s) => s.toolsText);
  const tools = replyTools(toolChoice, toolsText);
  const set = (key: keyof Sampling, v: number) => {
    if (Number.isFinite(v)) settings.getState().setSampling({ [key]: v });
  };
  return (
    <section className="panel sampling">
      <div className="panel-head">
        <h2>Sampling</h2>
      </div>
      <div className="form">
        {FIELDS.map((f) => (
          <label key={f.key} className={f.slider ? "sfield with-slider" : "sfield"} title={f.hint}>
            <span className="label">
              {f.label}
              {f.hint && <span className="hint"> {f.hint}</span>}
            </span>
            {f.slider && (
              <input
                type="range"
                min={f.min}
                max={f.max}
                step={f.step}
                value={sampling[f.key]}
                onChange={(e) => set(f.key, Number(e.target.value))}
              />
            )}
            <input
              type="number"
              className="num narrow"
              data-testid={`sampling-${f.key}`}
              min={f.min}
              max={f.max}
              step={f.step}
              value={sampling[f.key]}
              onChange={(e) => set(f.key, Number(e.target.value))}
            />
          </label>
        ))}
        {thinkingSwitch && (
          <label className="sfield" title="Off: the chat template's enable_thinking = false (no <think> block)">
            <span className="label">Thinking</span>
            <input
              type="checkbox"
              data-testid="sampling-thinking"
              checked={thinking}
              onChange={(e) => settings.getState().setThinking(e.target.checked)}
            />
          </label>
        )}
        <label className="sfield format" title="Structured output: every token keeps the reply a JSON document">
          <span className="label">Reply</span>
          <select
            data-testid="sampling-format"
            value={replyFormat}
            onChange={(e) => settings.getState().setReplyFormat(e.target.value as ReplyFormat)}
          >
            <option value="text">Text</option>
            <option value="json">JSON object</option>
            <option value="schema">JSON schema…</option>
          </select>
        </label>
        {replyFormat === "schema" && (
          <JsonBox
            testId="sampling-schema"
            text={schemaText}
            onChange={(t) => settings.getState().setSchemaText(t)}
            error={schema instanceof Error ? schema : null}
          />
        )}
        <label className="sfield format" title="Functions the model may call (the chat template must take tools)">
          <span className="label">Tools</span>
          <select
            data-testid="sampling-tools"
            value={toolChoice}
            onChange={(e) => settings.getState().setToolChoice(e.target.value as ToolChoice)}
          >
            <option value="off">Off</option>
            <option value="auto">Auto (model decides)</option>
            <option value="required">Required (a call)</option>
          </select>
        </label>
        {toolChoice !== "off" && (
          <JsonBox
            testId="sampling-tools-json"
            text={toolsText}
            onChange={(t) => settings.getState().setToolsText(t)}
            error={tools instanceof Error ? tools : null}
          />
        )}
        {sampling.seed !== undefined && (
          <button className="small" onClick={() => set("seed", Math.floor(Math.random() * 2 ** 31))}>
            Random seed
          </button>
        )}
      </div>
    </section>
  );
}
