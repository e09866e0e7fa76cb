// The `hire` command: generate, chat, bench, eval, make-model, export (core/cli/export.ts). Each
// command parses its flags (helpers in flags.ts), validates them, and calls the engine; engine
// errors become one clear line and a non-zero exit.
// To add a command: write `async function cmdX(argv)` and list it in COMMANDS.
import type { ParseArgsConfig } from "node:util";
import { createInterface } from "node:readline";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { importQuantized, quantSchemeOf } from "../loader/quantized-import.js";
import { importPytorch, pytorchFiles } from "../loader/pytorch-import.js";
import { writeError } from "../loader/file-io.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { ChatTemplateError, ContextOverflowError, ModelError, UsageError } from "../loader/errors.js";
import { Session, type GenerateOptions } from "../engine/session.js";
import { benchmarkLoads, benchmarkWithPeers, type BenchResult, type MethodRow } from "../engine/bench.js";
import type { WeightFormat } from "../loader/weight-format.js";
import { evalPlot, evaluate, type EvalConfig } from "../engine/eval.js";
import { CudaUnavailableError, cudaDevices } from "../backend/cuda.js";
import { BackendChoiceError, backendForModel, parseBackendChoice, type BackendChoice } from "../backend/select.js";
import { SPARSITY_FLAGS, parseK, reportJson, sparsityUpdate } from "./sparsity-flags.js";
import { FFN_METHODS, type FfnMethod } from "../sparse/settings.js";
import type { PrepareProgress } from "../sparse/sparsifier.js";
import type { ChatMessage } from "../loader/tokenizer.js";
import { cmdServe, SERVE_HELP } from "./serve.js";
import { ARCHS, makeModel, MakeModelError, PRESETS, type Arch, type DType } from "../modelgen/make-model.js";
import {
  grammarFlags,
  int,
  kvCacheFlag,
  RUN_MODEL_FLAGS,
  weightsFlag,
  num,
  openModel,
  outputFile,
  parse,
  positiveInt,
  threadsFlag,
} from "./flags.js";
import { EXPORT_HELP, runExport } from "./export.js";
import { importGguf } from "../gguf/import.js";
import { hubCacheDir, listCachedModels } from "../loader/hf-cache.js";

const SAMPLING_FLAGS = {
  ...RUN_MODEL_FLAGS,
  "max-tokens": { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  "presence-penalty": { type: "string" },
  "frequency-penalty": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  "ignore-eos": { type: "boolean" },
  schema: { type: "string" },
  regex: { type: "string" },
  choice: { type: "string" },
  grammar: { type: "string" },
  context: { type: "string" },
  "kv-cache": { type: "string" },
  threads: { type: "string" },
  backend: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

type SamplingValues = {
  [K in keyof typeof SAMPLING_FLAGS]?: K extends "stop" ? string[] : K extends "ignore-eos" | "mmap" ? boolean : string;
};

/** --backend auto|cpu|cuda|cuda:N (default HIRE_BACKEND, else auto), as a usage error when malformed. */
function backendChoice(flag: string | undefined): BackendChoice | undefined {
  if (flag === undefined) return undefined;
  try {
    return parseBackendChoice(flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function openSession(model: LoadedModel, v: SamplingValues): Session {
  const threads = threadsFlag(v.threads);
  const backend = backendForModel(model, backendChoice(v.backend), threads);
  return new Session(model, { contextLength: int("context", v.context), backend, kvCache: kvCacheFlag(v["kv-cache"]) });
}

function generateOptions(v: SamplingValues): GenerateOptions {
  return {
    maxTokens: int("max-tokens", v["max-tokens"]),
    temperature: num("temperature", v.temperature),
    topK: int("top-k", v["top-k"]),
    topP: num("top-p", v["top-p"]),
    minP: num("min-p", v["min-p"]),
    repetitionPenalty: num("repetition-penalty", v["repetition-penalty"]),
    presencePenalty: num("presence-penalty", v["presence-penalty"]),
    frequencyPenalty: num("frequency-penalty", v["frequency-penalty"]),
    seed: int("seed", v.seed),
    stop: v.stop,
    ignoreEos: v["ignore-eos"],
    grammar: grammarFlags(v),
  };
}

async function cmdGenerate(argv: string[]): Promise<void> {
  const v = parse(argv, {
    ...SAMPLING_FLAGS,
    ...SPARSITY_FLAGS,
    prompt: { type: "string" },
    logprobs: { type: "string" },
    json: { type: "boolean" },
    trace: { type: "boolean" },
  });
  if (v.prompt === undefined) throw new UsageError("--prompt TEXT is required");
  // Absent: no log-probabilities at all (greedy decoding can then take the argmax on a GPU).
  const logprobs = int("logprobs", v.logprobs, [0, 1000]);
  const base = generateOptions(v); // flag mistakes (a bad --schema) before the model loads
  const model = await openModel(v);
  const session = openSession(model, v);
  const settings = session.sparsity.update(sparsityUpdate(v), showProgress);
  // Per-layer telemetry in the JSON when a sparse method runs, a mixture of experts routes (its
  // experts per layer), or when asked with --trace.
  const withLayers =
    v.trace || settings.ffn.method !== "dense" || settings.head.method !== "dense" || model.config.moe !== undefined;
  const options = { ...base, logprobs, signal: interruptSignal() };
  const steps: Record<string, unknown>[] = [];
  for await (const ev of session.generate(v.prompt, options)) {
    if (ev.type === "token") {
      steps.push({
        id: ev.id,
        ...(ev.logprob !== undefined && { logprob: ev.logprob }),
        ...(ev.topLogprobs && { top_logprobs: ev.topLogprobs }),
        ...(withLayers && reportJson(ev.report, v.trace ?? false)),
      });
      if (!v.json) process.stdout.write(ev.text);
    } else if (ev.type === "done") {
      if (v.json) {
        const out = {
          prompt_ids: ev.promptIds,
          ids: ev.ids,
          text: ev.text,
          finish_reason: ev.finishReason,
          steps,
          timings: { prefill_ms: round(ev.prefillMs), decode_tokens_per_s: round(ev.decodeTokensPerS) },
        };
        process.stdout.write(JSON.stringify(out) + "\n");
      } else {
        process.stdout.write("\n");
        process.stderr.write(
          `[${ev.ids.length} tokens, ${ev.finishReason}; prefill ${round(ev.prefillMs)} ms, decode ${round(ev.decodeTokensPerS)} tokens/s]\n`,
        );
      }
    }
  }
  model.close();
}

async function cmdChat(argv: string[]): Promise<void> {
  const v = parse(argv, {
    ...SAMPLING_FLAGS,
    ...SPARSITY_FLAGS,
    system: { type: "string" },
    "no-think": { type: "boolean" },
  });
  const base = generateOptions(v);
  const model = await openModel(v);
  if (!model.tokenizer.hasChatTemplate) {
    model.close();
    // Before the prompt, not after the first message is typed (applyChatTemplate's error says so too).
    throw new UsageError(
      `${model.dir} has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json), ` +
        `as base models often do: use hire generate --prompt TEXT`,
    );
  }
  const session = openSession(model, v);
  // A reasoning model's chat template switches thinking off with enable_thinking: false.
  const thinking = v["no-think"] ? false : undefined;
  session.sparsity.update(sparsityUpdate(v), showProgress);
  const messages: ChatMessage[] = v.system ? [{ role: "system", content: v.system }] : [];
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  process.stdout.write(
    `${model.dir} (${model.config.architecture}); /reset starts over, /exit or Ctrl-D quits, Ctrl-C stops a reply.\n`,
  );
  rl.setPrompt("> ");
  rl.prompt();
  try {
    // Iterating the interface buffers lines typed (or piped) while a reply is being generated.
    for await (const line of rl) {
      const text = line.trim();
      if (text === "/exit" || text === "/quit") break;
      if (text === "/reset") {
        messages.splice(v.system ? 1 : 0);
        session.reset();
        rl.prompt();
        continue;
      }
      if (text === "") {
        rl.prompt();
        continue;
      }
      messages.push({ role: "user", content: text });
      let prompt: number[];
      try {
        prompt = model.tokenizer.encode(model.tokenizer.applyChatTemplate(messages, true, { thinking }), false);
      } catch (e) {
        if (!(e instanceof ChatTemplateError)) throw e;
        process.stderr.write(`${e.message}\n`);
        messages.pop();
        rl.prompt();
        continue;
      }
      const abort = new AbortController();
      const onSigint = () => abort.abort();
      rl.on("SIGINT", onSigint);
      let reply = "";
      try {
        for await (const ev of session.generate(prompt, { ...base, signal: abort.signal, onContextFull: "stop" })) {
          if (ev.type === "token") process.stdout.write(ev.text);
          if (ev.type === "done") {
            process.stdout.write(ev.text.slice(streamedLength(ev.text, reply)) + "\n");
            reply = ev.text;
            const note = ev.finishReason === "context_full" ? " — context full, /reset to start over" : "";
            process.stderr.write(
              `[${ev.ids.length} tokens, ${round(ev.decodeTokensPerS)} tokens/s, ${ev.finishReason}${note}]\n`,
            );
          }
          if (ev.type === "token") reply += ev.text;
        }
      } catch (e) {
        if (!(e instanceof ContextOverflowError)) throw e;
        process.stderr.write(`${e.message}; /reset to start over\n`);
        messages.pop();
        rl.prompt();
        continue;
      } finally {
        rl.off("SIGINT", onSigint);
      }
      messages.push({ role: "assistant", content: reply });
      rl.prompt();
    }
  } finally {
    rl.close();
    model.close();
  }
}

/** How much of the final text was already printed token by token. */
function streamedLength(final: string, streamed: string): number {
  return final.startsWith(streamed) ? streamed.length : final.length;
}

async function cmdBench(argv: string[]): Promise<void> {
  const v = parse(argv, {
    ...SPARSITY_FLAGS,
    ...RUN_MODEL_FLAGS,
    json: { type: "boolean" },
    methods: { type: "string" },
    "prompt-tokens": { type: "string" },
    "decode-tokens": { type: "string" },
    repeats: { type: "string" },
    threads: { type: "string" },
    backend: { type: "string" },
    "kv-cache": { type: "string" },
    peers: { type: "string" },
    "ort-ep": { type: "string" },
  });
  const methods = (v.methods ?? "").split(",").filter((m) => m !== "") as FfnMethod[];
  for (const m of methods) {
    if (!FFN_METHODS.includes(m)) throw new UsageError(`--methods: "${m}" is not one of ${FFN_METHODS.join(", ")}`);
  }
  const ffnK = v["ffn-k"]?.split(",").map((k) => parseK("ffn-k", k));
  const peers = (v.peers ?? "").split(",").filter((p) => p !== "");
  const ortEp = v["ort-ep"] ?? "cpu";
  if (ortEp !== "cpu" && ortEp !== "cuda" && ortEp !== "webgpu")
    throw new UsageError(`--ort-ep must be cpu, cuda or webgpu, got "${ortEp}"`);
  // --weights file,int8,int4: one load each, benched side by side (see benchmarkLoads), each row
  // labelled with the format its load used ("auto" resolved).
  const formats = (v.weights ?? "auto").split(",").map((w) => weightsFlag(w.trim())!);
  if (formats.length > 1 && peers.length > 0) throw new UsageError("--peers takes one --weights format");
  const loads: { weights: WeightFormat; model: LoadedModel }[] = [];
  try {
    for (const weights of formats) {
      const model = await openModel({ ...v, weights });
      loads.push({ weights: model.weightFormat, model });
      if (new Set(loads.map((l) => l.weights)).size < loads.length)
        throw new UsageError(`--weights lists a format twice: "${v.weights}" loads ${model.weightFormat} twice`);
    }
  } catch (e) {
    for (const l of loads) l.model.close();
    throw e;
  }
  const model = loads[0].model;
  const options = {
    promptTokens: positiveInt("prompt-tokens", v["prompt-tokens"]),
    decodeTokens: positiveInt("decode-tokens", v["decode-tokens"]),
    repeats: int("repeats", v.repeats, [1, 1000]),
    threads: threadsFlag(v.threads),
    backend: backendChoice(v.backend),
    kvCache: kvCacheFlag(v["kv-cache"]),
    methods,
    ffnK,
    sparsity: sparsityUpdate({ ...v, "ffn-k": undefined, ffn: undefined }),
  };
  let r: BenchResult;
  try {
    r = peers.length ? await benchmarkWithPeers(model, { ...options, peers, ortEp }) : benchmarkLoads(loads, options);
  } finally {
    for (const l of loads) l.model.close();
  }
  if (v.json) {
    process.stdout.write(JSON.stringify(r, (_, x) => (typeof x === "number" ? round(x) : x)) + "\n");
    return;
  }
  const gb = (b: number) => (b / 1e9).toFixed(3);
  const lines = [
    `model            ${r.model} (${r.architecture}, ${r.dtype})`,
    `backend          ${r.backend}`,
    `threads          ${r.threads} (${r.kernels} kernels)`,
    `prefill          ${r.prefill_tokens_per_s.toFixed(1)} tokens/s (${r.prompt_tokens}-token prompt)`,
    `decode           ${r.decode_tokens_per_s.toFixed(2)} tokens/s, ${r.decode_ms_per_token.toFixed(2)} ms/token`,
    `weights/token    ${gb(r.weight_bytes_per_token)} GB`,
    `KV cache/token   ${gb(r.kv_bytes_per_token)} GB (${r.kv_cache}, attention at positions ${r.prompt_tokens}-${r.prompt_tokens + r.decode_tokens - 1})`,
    `effective read   ${r.effective_read_gb_per_s.toFixed(2)} GB/s`,
    `memory bandwidth ${r.measured_read_bandwidth_gb_per_s.toFixed(2)} GB/s (measured now)`,
    // No gather probe on a GPU (measured as 0).
    ...(r.measured_gather_bandwidth_gb_per_s > 0
      ? [
          `gather bandwidth ${r.measured_gather_bandwidth_gb_per_s.toFixed(2)} GB/s (${r.gather_chunk_bytes / 1024} KiB rows, 1 in 5)`,
        ]
      : []),
    `roofline         ${r.percent_of_roofline.toFixed(1)} %`,
  ];
  // A row of several loads names its weights: "hire+head int8".
  const label = (row: MethodRow) => (row.weights ? `${row.method} ${row.weights}` : row.method);
  const width = Math.max(12, ...r.rows.map((row) => label(row).length));
  if (r.rows.length > 1) {
    lines.push(
      "",
      `${"method".padEnd(width + 2)}ffn k   tokens/s  speedup  GB/token  GB/s   roofline  ms/token (in step)`,
    );
    for (const row of r.rows) {
      lines.push(
        [
          label(row).padEnd(width),
          (row.ffn_k === null ? "-" : String(row.ffn_k)).padStart(6),
          row.decode_tokens_per_s.toFixed(2).padStart(10),
          `${row.speedup.toFixed(2)}x`.padStart(8),
          gb(row.bytes_per_token).padStart(9),
          row.effective_read_gb_per_s.toFixed(1).padStart(6),
          `${row.percent_of_roofline.toFixed(1)} %`.padStart(9),
          `${row.decode_ms_per_token.toFixed(3)} (${row.step_ms_per_token.toFixed(3)})`.padStart(19),
        ].join(" "),
      );
    }
  }
  // Each row's steps: where its time and bytes went (HiRE's predictor and exact rows include their
  // top-k selections), against the streaming roofline.
  lines.push("", "steps         ms/token  GB/token   GB/s   roofline");
  for (const row of r.rows) {
    lines.push(`${label(row)}${row.ffn_k === null ? "" : ` (k ${row.ffn_k})`}`);
    for (const st of row.steps)
      lines.push(
        [
          `  ${st.step}`.padEnd(14),
          st.ms_per_token.toFixed(3).padStart(8),
          gb(st.bytes_per_token).padStart(9),
          st.gb_per_s.toFixed(1).padStart(6),
          `${st.percent_of_roofline.toFixed(1)} %`.padStart(10),
        ].join(" "),
      );
  }
  if (r.peers?.length) {
    // Peers: speedup against our dense row; "ours/peer" = our matching row's tokens/s ÷ the peer's;
    // ids: leading greedy ids equal to that row's; steps: fed that row's ids, the steps picking its token.
    const cols = (a: string, b: string, c: string, d: string, e: string, g: string, f: string) =>
      [a.padEnd(12), b.padStart(9), c.padStart(8), d.padEnd(20), e.padStart(6), g.padStart(6), f].join(" ");
    lines.push("", cols("peer", "tokens/s", "speedup", "ours/peer", "ids", "steps", " detail"));
    for (const p of r.peers) {
      if (p.skipped !== undefined || p.decode_tokens_per_s === null) {
        lines.push(`${p.method.padEnd(12)} skipped: ${p.skipped ?? "no result"}`);
        continue;
      }
      lines.push(
        cols(
          p.method,
          p.decode_tokens_per_s.toFixed(2),
          `${p.speedup!.toFixed(2)}x`,
          `${p.vs_ours === null ? "-" : `${p.vs_ours.toFixed(2)}x`} (${p.vs_row})`,
          `${p.ids_agree}/${p.ids_compared}`,
          p.steps_agree === null ? "-" : `${p.steps_agree}/${p.ids_compared}`,
          ` ${p.detail}`,
        ),
      );
    }
  }
  process.stdout.write(lines.join("\n") + "\n");
}

async function cmdEval(argv: string[]): Promise<void> {
  const v = parse(argv, {
    ...SPARSITY_FLAGS,
    ...RUN_MODEL_FLAGS,
    text: { type: "string" },
    json: { type: "boolean" },
    plot: { type: "string" },
    methods: { type: "string" },
    "max-tokens": { type: "string" },
  });
  if (!v.text) throw new UsageError("--text FILE is required (a plain-text file to measure perplexity on)");
  // Checked before the evaluation (minutes on a large model), not when its plot is written.
  if (v.plot !== undefined) outputFile("plot", v.plot);
  let text: string;
  try {
    text = readFileSync(v.text, "utf8");
  } catch {
    throw new UsageError(`--text: cannot read ${v.text}`);
  }
  const methods = (v.methods ?? "hire").split(",").filter((m) => m !== "" && m !== "dense") as FfnMethod[];
  for (const m of methods) {
    if (!FFN_METHODS.includes(m)) throw new UsageError(`--methods: "${m}" is not one of ${FFN_METHODS.join(", ")}`);
  }
  const ks = (v["ffn-k"] ?? "0.05,0.1,0.2").split(",").map((k) => parseK("ffn-k", k));
  const oversamples = (v.oversample ?? "1,2,4").split(",").map((o) => parseK("oversample", o));
  const base = sparsityUpdate({ ...v, "ffn-k": undefined, oversample: undefined, ffn: undefined });
  const configs: EvalConfig[] = [
    { label: "dense", ffnK: null, oversample: null, settings: { ffn: { method: "dense" } } },
  ];
  for (const method of methods) {
    for (const k of ks) {
      for (const oversample of method === "hire" ? oversamples : [1]) {
        configs.push({
          label: base.head?.method === "hire" ? `${method}+head` : method,
          ffnK: k,
          oversample: method === "hire" ? oversample : null,
          settings: { ...base, ffn: { ...base.ffn, method, k, oversample } },
        });
      }
    }
  }
  const model = await openModel(v);
  const rows = evaluate(model, text, configs, int("max-tokens", v["max-tokens"]) ?? 512);
  model.close();
  // The results first: a plot that cannot be written must not lose them.
  if (v.json) {
    process.stdout.write(
      JSON.stringify({ model: model.dir, text: v.text, rows }, (_, x) => (typeof x === "number" ? round(x) : x)) + "\n",
    );
  } else {
    process.stdout.write(evalTable(model.dir, v.text, rows));
  }
  if (v.plot) {
    try {
      writeFileSync(v.plot, evalPlot(rows, `${basename(model.dir)}: recall and perplexity against k`));
    } catch (e) {
      throw writeError(e, v.plot);
    }
  }
}

/** `hire eval`'s table of rows. */
function evalTable(dir: string, textFile: string, rows: ReturnType<typeof evaluate>): string {
  // As wide as the longest method ("topk-exact+head"), so the columns stay aligned.
  const width = Math.max(12, ...rows.map((r) => r.method.length));
  const lines = [
    `${dir} on ${textFile} (${rows[0].tokens} tokens)`,
    `${"method".padEnd(width)}  ffn k  over  perplexity  mean recall  head hit`,
  ];
  for (const r of rows) {
    lines.push(
      [
        r.method.padEnd(width),
        (r.ffn_k === null ? "-" : String(r.ffn_k)).padStart(6),
        (r.oversample === null ? "-" : String(r.oversample)).padStart(5),
        r.perplexity.toFixed(3).padStart(11),
        (r.mean_recall === null ? "-" : r.mean_recall.toFixed(3)).padStart(12),
        (r.head_argmax_hit_rate === null ? "-" : r.head_argmax_hit_rate.toFixed(3)).padStart(9),
      ].join(" "),
    );
  }
  return lines.join("\n") + "\n";
}

async function cmdMakeModel(argv: string[]): Promise<void> {
  const v = parse(argv, {
    arch: { type: "string" },
    preset: { type: "string" },
    hidden: { type: "string" },
    layers: { type: "string" },
    heads: { type: "string" },
    "kv-heads": { type: "string" },
    intermediate: { type: "string" },
    vocab: { type: "string" },
    experts: { type: "string" },
    "experts-per-token": { type: "string" },
    dtype: { type: "string" },
    seed: { type: "string" },
    out: { type: "string" },
    "shard-mb": { type: "string" },
    overwrite: { type: "boolean" },
  });
  if (!v.out) throw new UsageError("--out DIR is required");
  const preset = v.preset ? PRESETS[v.preset] : undefined;
  if (v.preset && !preset)
    throw new UsageError(`unknown preset "${v.preset}" (known: ${Object.keys(PRESETS).join(", ")})`);
  const arch = (v.arch ?? preset?.arch) as Arch | undefined;
  if (!arch) throw new UsageError(`--arch ${Object.keys(ARCHS).join("|")} (or --preset NAME) is required`);
  const dtype = (v.dtype ?? "bf16") as DType;
  if (!["f32", "f16", "bf16"].includes(dtype)) throw new UsageError(`--dtype must be f32, f16 or bf16, got "${dtype}"`);
  const shape = Object.fromEntries(
    Object.entries({
      hidden: int("hidden", v.hidden),
      layers: int("layers", v.layers),
      heads: int("heads", v.heads),
      kvHeads: int("kv-heads", v["kv-heads"]),
      intermediate: int("intermediate", v.intermediate),
      vocab: int("vocab", v.vocab),
      experts: int("experts", v.experts),
      expertsPerToken: int("experts-per-token", v["experts-per-token"]),
    }).filter(([, x]) => x !== undefined),
  );
  const shardMb = num("shard-mb", v["shard-mb"]);
  const started = performance.now();
  let lastPct = -1;
  const r = await makeModel({
    arch,
    preset: v.preset,
    shape,
    dtype,
    seed: int("seed", v.seed) ?? 0,
    out: v.out,
    overwrite: v.overwrite,
    maxShardBytes: shardMb === undefined ? undefined : shardMb * 1024 * 1024,
    onProgress: (done, total) => {
      const pct = Math.floor((100 * done) / total);
      if (process.stderr.isTTY && pct !== lastPct) process.stderr.write(`\rwriting ${pct}%`);
      lastPct = pct;
    },
  });
  if (process.stderr.isTTY) process.stderr.write("\r");
  process.stdout.write(
    `wrote ${r.dir}: ${arch}, ${(r.params / 1e6).toFixed(1)}M parameters, ${(r.bytes / 1e6).toFixed(1)} MB in ${r.files.length} file(s), ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
  );
}

/** Predictor building (first use of a sparse method) on a terminal: "preparing ffn 3/16". */
function showProgress(p: PrepareProgress): void {
  if (!process.stderr.isTTY) return;
  process.stderr.write(
    `\rpreparing ${p.stage} ${p.done}/${p.total}${p.stage === "head" || p.done === p.total ? "\n" : ""}`,
  );
}

/** Ctrl-C during `hire generate` stops generation cleanly (the partial result is still printed). */
function interruptSignal(): AbortSignal {
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  return abort.signal;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** `hire import --gguf FILE.gguf --out DIR`: a GGUF file as a Hugging Face model folder where the user wants it. */
async function cmdImport(argv: string[]): Promise<void> {
  const v = parse(argv, { gguf: { type: "string" }, checkpoint: { type: "string" }, out: { type: "string" } });
  const file = v.gguf;
  if (!file === !v.checkpoint)
    throw new UsageError("one of --gguf FILE.gguf or --checkpoint DIR is required (what to import)");
  if (!v.out) throw new UsageError("--out DIR is required (the folder to write)");
  const out = resolve(v.out);
  if (existsSync(out) && (!statSync(out).isDirectory() || readdirSync(out).length > 0))
    throw new UsageError(`--out ${out} exists and is not an empty folder`);
  const started = performance.now();
  let shown = -1;
  const onProgress = (done: number, total: number) => {
    const pct = Math.floor((100 * done) / total);
    if (process.stderr.isTTY && pct !== shown) process.stderr.write(`\rimporting ${pct} %`);
    shown = pct;
  };
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  if (v.checkpoint) {
    // A PyTorch checkpoint (pytorch_model.bin) or a quantized one, written as plain safetensors.
    const dir = resolve(v.checkpoint);
    if (!existsSync(join(dir, "config.json")))
      throw new UsageError(`--checkpoint ${dir} is not a model folder (no config.json)`);
    let what: string;
    if (quantSchemeOf(dir)) what = `a ${(await importQuantized(dir, out, { onProgress })).method} checkpoint`;
    else if (pytorchFiles(dir))
      what = `PyTorch's pickles, ${(await importPytorch(dir, out, { onProgress })).tensors} tensors`;
    else
      throw new UsageError(
        `--checkpoint ${dir} holds neither PyTorch pickles nor a quantized checkpoint; it loads as it is`,
      );
    if (process.stderr.isTTY) process.stderr.write("\r\x1b[K");
    process.stdout.write(`wrote ${out}: ${what}, in ${seconds()} s\n`);
    return;
  }
  const r = await importGguf(resolve(file!), out, { onProgress });
  if (process.stderr.isTTY) process.stderr.write("\r\x1b[K");
  const types = Object.entries(r.sourceTypes)
    .map(([t, n]) => `${n} ${t}`)
    .join(", ");
  process.stdout.write(
    `wrote ${out}: ${r.architecture} (${r.ggufArchitecture}), ${r.tensors} tensors in ${r.dtype} from ${types}, ` +
      `${(r.bytes / 1e9).toFixed(2)} GB in ${seconds()} s\n`,
  );
}

/** `hire gpus`: the GPUs the CUDA backend can use (or why none), and what --backend auto picks. */
async function cmdGpus(argv: string[]): Promise<void> {
  const v = parse(argv, { json: { type: "boolean" } });
  const info = cudaDevices();
  if (v.json) {
    process.stdout.write(JSON.stringify(info) + "\n");
    return;
  }
  const lines = [`cuda backend     ${info.compiled ? "built" : "not built (no nvcc at install time)"}`];
  for (const d of info.devices)
    lines.push(
      `cuda:${d.index}           ${d.name}, compute ${d.computeCapability}, ${d.multiprocessors} SMs, ` +
        `${(d.totalBytes / 1024 ** 3).toFixed(1)} GiB, ${Math.round(d.peakGBps)} GB/s peak`,
    );
  if (info.devices.length === 0) lines.push(`no GPU           ${info.reason}`);
  lines.push(`--backend auto   ${info.devices.length > 0 ? `cuda:${info.devices[0].index}` : "cpu"}`);
  process.stdout.write(lines.join("\n") + "\n");
}

/** The models already in the Hugging Face cache, and what stops any of them from loading. */
async function cmdModels(argv: string[]): Promise<void> {
  const v = parse(argv, { json: { type: "boolean" } });
  const hub = hubCacheDir();
  const models = await listCachedModels();
  if (v.json) {
    process.stdout.write(JSON.stringify({ hub, models }) + "\n");
    return;
  }
  const lines = [`Hugging Face cache: ${hub}${models.length === 0 ? " (no models)" : ""}`];
  const width = Math.max(0, ...models.map((m) => m.repo.length));
  for (const m of models) {
    const what = m.problem
      ? `cannot load: ${m.problem.code}: ${m.problem.message}`
      : `${m.architecture}, ${m.weightBytes >= 1e9 ? `${(m.weightBytes / 1e9).toFixed(2)} GB` : `${(m.weightBytes / 1e6).toFixed(1)} MB`}` +
        (m.quantization ? `, ${m.quantization} (imported on its first load)` : "") +
        (m.pytorch ? ", PyTorch pickles (imported on its first load)" : "");
    lines.push(`  ${m.repo.padEnd(width)}  ${what}`);
  }
  if (models.length > 0) lines.push("load one with --model ORG/NAME (or ORG/NAME@REVISION, ORG/NAME/FILE.gguf)");
  process.stdout.write(lines.join("\n") + "\n");
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  generate: {
    run: cmdGenerate,
    help: "--model DIR [--mmap] [--weights auto|file|int8|int4] --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F] [--seed S] [--stop STR]... [--ignore-eos] [--schema FILE|JSON | --regex RE | --choice A,B,... | --grammar FILE|GBNF] [--logprobs N] [--context N] [--kv-cache f32|f16] [--backend auto|cpu|cuda|cuda:N] [--json] [--trace] [sparsity flags: --ffn dense|topk-exact|hire|dip|dip-ca --ffn-k K --oversample O --predictor int4|int8|lowrank:R --head dense|hire --head-k K --shards P --audit N --layer-k L=K --layer-oversample L=O --layer-predictor L=PREDICTOR]",
  },
  chat: {
    run: cmdChat,
    help: "--model DIR [--mmap] [--weights auto|file|int8|int4] [--system TEXT] [--no-think] [sampling flags as for generate]",
  },
  bench: {
    run: cmdBench,
    help: "--model DIR [--mmap] [--weights auto|file|int8|int4] [--prompt-tokens N] [--decode-tokens N] [--repeats N] [--threads N] [--backend auto|cpu|cuda|cuda:N] [--kv-cache f32|f16] [--methods hire,...] [sparsity flags] [--peers ort,ort-hire,llamacpp] [--ort-ep cpu|cuda|webgpu] [--json]",
  },
  eval: {
    run: cmdEval,
    help: "--model DIR [--mmap] [--weights auto|file|int8|int4] --text FILE [--methods hire,topk-exact] [--ffn-k 0.05,0.1,0.2] [--oversample 1,2,4] [sparsity flags] [--max-tokens N] [--plot FILE.svg] [--json]",
  },
  serve: { run: cmdServe, help: SERVE_HELP },
  models: { run: cmdModels, help: "[--json]   the models in the Hugging Face cache (--model takes their ORG/NAME)" },
  gpus: { run: cmdGpus, help: "[--json]   the GPUs the CUDA backend can use, or why none" },
  export: { run: runExport, help: EXPORT_HELP },
  import: {
    run: cmdImport,
    help: "--gguf FILE.gguf | --checkpoint DIR --out DIR   a GGUF file, or a PyTorch (pytorch_model.bin) or quantized checkpoint, as a folder of safetensors (--model imports into the cache by itself)",
  },
  "make-model": {
    run: cmdMakeModel,
    help: `--arch ${Object.keys(ARCHS).join("|")} [--preset NAME] [--hidden H --layers L --heads A --kv-heads K --intermediate F --vocab V] [--experts E --experts-per-token K] --dtype f32|f16|bf16 --seed S --out DIR [--shard-mb MB] [--overwrite]`,
  },
};

function usage(): string {
  return (
    ["usage: hire <command> [flags]", ...Object.entries(COMMANDS).map(([n, c]) => `  hire ${n} ${c.help}`)].join("\n") +
    "\n"
  );
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`hire: unknown command "${name}"\n${usage()}`);
    return 2;
  }
  try {
    await cmd.run(rest);
    return 0;
  } catch (e) {
    if (
      e instanceof ModelError ||
      e instanceof UsageError ||
      e instanceof ContextOverflowError ||
      e instanceof ChatTemplateError ||
      e instanceof MakeModelError ||
      e instanceof CudaUnavailableError ||
      e instanceof BackendChoiceError ||
      e instanceof RangeError
    ) {
      process.stderr.write(`hire ${name}: ${e.message}\n`);
      return e instanceof UsageError ? 2 : 1;
    }
    throw e;
  }
}
