// How long a structured-output mask takes on a 128K-token vocabulary (Llama 3's size), token by token
// through a document (free strings, a number, an array, a string with a pattern): `npm run build:ts && node tools/structured/mask-bench.mjs`. No 128K tokenizer
// can be downloaded here, so the vocabulary is synthetic: the 256 bytes, JSON punctuation, and
// random words (half with a leading space, a few with quotes), and 4000 tokens that run into quotes,
// escapes, newlines and punctuation, as byte-level BPE vocabularies look.
import { performance } from "node:perf_hooks";
import { TextEncoder } from "node:util";
import { TokenVocabulary, GrammarConstraint } from "../../dist/core/structured/constraint.js";
import { compileSchema, wholeRegex } from "../../dist/core/structured/schema.js";
import { compileGbnf } from "../../dist/core/structured/gbnf.js";

const enc = new TextEncoder();
const pieces = [];
for (let b = 0; b < 256; b++) pieces.push(String.fromCharCode(b));
const doc = [
  '{"',
  "name",
  '":',
  ' "',
  "Ada",
  " Love",
  "lace",
  '",',
  ' "',
  "born",
  '":',
  " 18",
  "15",
  ",",
  ' "',
  "tags",
  '":',
  ' ["',
  "math",
  '",',
  ' "',
  "poet",
  'ry"',
  "],",
  ' "',
  "code",
  '":',
  ' "',
  "AB",
  "-",
  "12",
  '"}',
];
// An arithmetic expression for a GBNF grammar (rules, recursion, repetitions), and a code for a regex.
const expr = ["(", "12", "+", "3", ")", "*", "45", "-", "(", "6", "/", "7", ")"];
const code = ["AB", "-", "12", "-", "x", "y"];
pieces.push(
  ...expr,
  ...code,
  ...doc,
  ...["{", "}", '"', '",', '":', " {", " [", "\n", "\n\n", "  ", "    ", "0", "12", ".5", " true", "null"],
);
let r = 12345;
const rnd = () => (r = (Math.imul(r, 1103515245) + 12345) >>> 0) / 2 ** 32;
// Tokens whose text runs into quotes, escapes, newlines and punctuation (`",`, `."\n`, `\\n`, ...): inside
// a string these are the ones that depend on the state, through a few hundred distinct tails.
const marks = ['"', "\\", "\n", "\t", ",", ".", ":", "}", "]", ")", " ", "{", "[", "'", "0", "n", "u"];
for (let i = 0; i < 4000; i++) {
  let w = rnd() < 0.5 ? "ab".slice(0, 1 + Math.floor(rnd() * 2)) : "";
  w += ['"', "\\", "\n"][Math.floor(rnd() * 3)];
  for (let j = 0, n = Math.floor(rnd() * 4); j < n; j++) w += marks[Math.floor(rnd() * marks.length)];
  pieces.push(w);
}
while (pieces.length < 128256) {
  let w = rnd() < 0.5 ? " " : "";
  for (let i = 0, n = 1 + Math.floor(rnd() * 8); i < n; i++) w += "abcdefghijklmnopqrstuvwxyz"[Math.floor(rnd() * 26)];
  if (rnd() < 0.05) w += '"';
  pieces.push(w);
}
const bytes = pieces.map((p, i) => (i < 256 ? Uint8Array.of(i) : enc.encode(p)));
const vocab = new TokenVocabulary(bytes, new Set());
const schema = compileSchema({
  type: "object",
  properties: {
    name: { type: "string" },
    born: { type: "integer" },
    tags: { type: "array", items: { type: "string" } },
    code: { type: "string", pattern: "^[A-Z]{2}-\\d+$" },
  },
  required: ["name", "born", "tags", "code"],
});
const logits = new Float32Array(bytes.length);

/**
 * Six walks through `text` under `grammar`, each with a fresh constraint (a state's mask is computed
 * once and then reused, so each walk times every state's first mask); the first walk warms the JIT
 * up, the best of the other five is reported per step.
 */
function bench(title, grammar, text) {
  const rows = text.map((piece) => [piece, 0, Infinity]);
  for (let walk = 0; walk < 6; walk++) {
    const c = new GrammarConstraint(grammar, vocab);
    text.forEach((piece, i) => {
      logits.fill(0);
      const t0 = performance.now();
      c.mask(logits);
      const ms = performance.now() - t0;
      if (walk > 0) rows[i][2] = Math.min(rows[i][2], ms);
      rows[i][1] = logits.filter((x) => x === 0).length;
      c.advance(pieces.indexOf(piece, 256));
    });
  }
  console.log(title);
  for (const [piece, kept, ms] of rows)
    console.log(`  ${JSON.stringify(piece).padEnd(10)} allowed ${String(kept).padStart(6)}  ${ms.toFixed(2)} ms`);
  const sorted = rows.map((x) => x[2]).sort((a, b) => a - b);
  console.log(
    `  median ${sorted[sorted.length >> 1].toFixed(2)} ms, max ${sorted[sorted.length - 1].toFixed(2)} ms per token (best of 5 each)`,
  );
}

bench("JSON schema", schema, doc);
bench(
  "GBNF (arithmetic)",
  compileGbnf(
    'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= factor (("*" | "/") factor)*\nfactor ::= [0-9]+ | "(" expr ")"',
  ),
  expr,
);
bench("whole-reply regex", wholeRegex("[A-Z]{2}(-[0-9]+)+-[a-z]+"), code);
