// Shared test helpers: paths, temporary folders, running the real `hire` CLI.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineHost } from "../core/host/engine-host.js";
import type { HostMessage } from "../core/host/protocol.js";

/** The repository root (tests run from dist/test/). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The golden models: shared/golden beside the repository (CI's layout), or $HIRE_GOLDEN_DIR. */
export function goldenDir(): string | undefined {
  const dir = process.env.HIRE_GOLDEN_DIR ?? join(REPO_ROOT, "..", "shared", "golden");
  if (existsSync(dir)) return dir;
  if (process.env.CI) throw new Error(`golden models not found at ${dir}; CI must have shared/ beside the repository`);
  return undefined;
}

export function tempDir(t: { after: (fn: () => void) => void }, prefix = "hire-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
  signal: NodeJS.Signals | null;
}

/** Run `hire ARGS` as a user would (a real process through bin/hire.js). */
export function hire(args: string[], input?: string, env?: Record<string, string>): CliResult {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, "bin", "hire.js"), ...args], {
    encoding: "utf8",
    input,
    env: env && { ...process.env, ...env },
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** A chat template that refuses a system message the way Gemma 2's does (raise_exception). */
export const NO_SYSTEM_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
  "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}";

/**
 * Gives a model folder a chat template that ends the way Qwen3's does, reading `enable_thinking`
 * (an empty think block when it is false), for tests of the thinking switch.
 */
export function useReasoningTemplate(dir: string): void {
  const file = join(dir, "tokenizer_config.json");
  const cfg = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  cfg.chat_template =
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}" +
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}" +
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}" +
    "{%- endif %}";
  writeFileSync(file, JSON.stringify(cfg));
}

/**
 * Puts a model folder's files into a Hugging Face hub cache the way huggingface_hub does: each file
 * a blob named by its hash, the snapshot's entries relative links to the blobs, refs/main naming
 * the commit (unless `ref` is false). Returns the snapshot folder.
 */
export function putInHubCache(hub: string, repo: string, src: string, commit: string, ref = true): string {
  const repoDir = join(hub, `models--${repo.replace("/", "--")}`);
  const snapshot = join(repoDir, "snapshots", commit);
  mkdirSync(join(repoDir, "blobs"), { recursive: true });
  mkdirSync(snapshot, { recursive: true });
  for (const name of readdirSync(src)) {
    const bytes = readFileSync(join(src, name));
    const blob = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(join(repoDir, "blobs", blob), bytes);
    symlinkSync(join("..", "..", "blobs", blob), join(snapshot, name));
  }
  if (ref) {
    mkdirSync(join(repoDir, "refs"), { recursive: true });
    writeFileSync(join(repoDir, "refs", "main"), commit);
  }
  return snapshot;
}

/** Sets element `i` of an F32 tensor in a safetensors file, in place (tests that need a chosen weight). */
export function setF32(file: string, tensor: string, i: number, value: number): void {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const t = (
    JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; data_offsets: number[] }>
  )[tensor];
  if (t?.dtype !== "F32") throw new Error(`${file}: ${tensor} is not an F32 tensor`);
  buf.writeFloatLE(value, 8 + n + t.data_offsets[0] + 4 * i);
  writeFileSync(file, buf);
}

/**
 * A Llama-2-style tokenizer.json (SentencePiece BPE: "▁" for spaces, byte fallback, a decoder that
 * strips the first leading space) over `vocab` ids: 3 specials, 256 byte pieces, then words.
 */
export function sentencePieceTokenizer(vocab: number): Record<string, unknown> {
  const pieces = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const words = ["▁", "▁the", "▁quick", "▁brown", "▁fox", "'s", "▁é", "語", ".", ",", "▁a", "b", "c"];
  for (let i = 0; pieces.length < vocab; i++) pieces.push(i < words.length ? words[i] : `▁w${i}`);
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(pieces.map((p, i) => [p, i])),
      merges: [],
    },
  };
}

// A chat template in the form Qwen 2.5's takes tools and calls (tools listed in the system turn,
// calls as <tool_call> JSON, results in <tool_response>), written for this test.
export const HERMES_TOOLS_TEMPLATE = `{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}
{% endif %}# Tools
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>
For each call, return <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}{% for m in messages %}{% if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{{ m.content }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;

/** A request to an EngineHost and its reply (the host's `handle`, answered on the request's id). */
export function hostAsker(host: EngineHost): (req: object) => Promise<HostMessage> {
  let id = 0;
  return (req) =>
    new Promise<HostMessage>((resolve) => {
      const rid = ++id;
      void host.handle({ id: rid, ...req }, (m) => {
        if (m.type === "reply" && m.id === rid) resolve(m);
      });
    });
}
