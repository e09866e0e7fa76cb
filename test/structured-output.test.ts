// Structured output: JSON Schema → grammar (errors for what it cannot enforce), the byte automaton
// on documents written by JSON.stringify and by hand (accepted whole, refused at the first wrong
// byte), vocabulary masks against a token-by-token brute force, each tokenizer kind's token bytes,
// and the real engine (the built-in model, random-weight models, HiRE's output layer) writing
// documents that parse and fit their schema at any temperature.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { compileSchema, ANY_OBJECT, ANY, choice, text, wholeRegex, type Node } from "../core/structured/schema.js";
import {
  accepting,
  feed,
  feedAll,
  finished,
  initial,
  utf8CharLength,
  type Stack,
} from "../core/structured/automaton.js";
import { GrammarConstraint, TokenVocabulary, TriggeredGrammar } from "../core/structured/constraint.js";
import { Regex } from "../core/structured/regex.js";
import { compileGbnf } from "../core/structured/gbnf.js";
import { cachedGrammar } from "../core/structured/grammar-cache.js";
import { Rng } from "../core/engine/sampler.js";
import { loadModel } from "../core/loader/model-folder.js";
import { defaultModelDir } from "../core/loader/default-model.js";
import { Session } from "../core/engine/session.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { ModelTokenizer } from "../core/loader/tokenizer.js";
import { UsageError } from "../core/loader/errors.js";
import { sentencePieceTokenizer, tempDir } from "./helpers.js";

const utf8 = new TextEncoder();

/** Where `doc` is first refused (its byte index), or -1 when every byte is taken; and whether it may end there. */
function run(node: Node, doc: string): { refusedAt: number; complete: boolean; stacks: Stack[] } {
  const bytes = utf8.encode(doc);
  let stacks = initial(node);
  for (let i = 0; i < bytes.length; i++) {
    const next = feed(stacks, bytes[i]);
    if (next.length === 0) return { refusedAt: i, complete: false, stacks };
    stacks = next;
  }
  return { refusedAt: -1, complete: accepting(stacks), stacks };
}

const accepts = (node: Node, doc: string) => {
  const r = run(node, doc);
  assert.equal(r.refusedAt, -1, `refused ${JSON.stringify(doc)} at byte ${r.refusedAt}`);
  assert.ok(r.complete, `${JSON.stringify(doc)} should be a complete document`);
};
/** `doc` is refused exactly where `at` (a prefix of it) ends. */
const refuses = (node: Node, doc: string, at: string) => {
  assert.ok(doc.startsWith(at));
  assert.equal(run(node, doc).refusedAt, utf8.encode(at).length, `${JSON.stringify(doc)} refused at the wrong byte`);
};
const incomplete = (node: Node, doc: string) => {
  const r = run(node, doc);
  assert.equal(r.refusedAt, -1);
  assert.equal(r.complete, false, `${JSON.stringify(doc)} should not be complete`);
};

/** A random JSON value (nested objects, arrays, strings with escapes and UTF-8, numbers, literals). */
function randomValue(rng: Rng, depth = 0): unknown {
  const r = rng.next();
  if (depth < 3 && r < 0.2)
    return Array.from({ length: Math.floor(rng.next() * 4) }, () => randomValue(rng, depth + 1));
  if (depth < 3 && r < 0.4)
    return Object.fromEntries(
      Array.from({ length: Math.floor(rng.next() * 4) }, (_, i) => [`k${i}\n"é`, randomValue(rng, depth + 1)]),
    );
  if (r < 0.55)
    return ["", "plain", 'quote " backslash \\ tab \t', "ünïcödé ✓ 𝄞", "\u0001ctl"][Math.floor(rng.next() * 5)];
  if (r < 0.75) return [0, -0.5, 12345, 1.5e-7, -3e21, 0.1][Math.floor(rng.next() * 6)];
  return [true, false, null][Math.floor(rng.next() * 3)];
}

test("any JSON: every document JSON.stringify writes (compact and indented) is accepted whole", () => {
  const rng = new Rng(7);
  for (let i = 0; i < 300; i++) {
    const v = randomValue(rng);
    accepts(ANY, JSON.stringify(v));
    accepts(ANY, JSON.stringify(v, null, 2));
    accepts(ANY, JSON.stringify(v, null, "\t"));
  }
  accepts(ANY, '{"a": [1, -2.5e+3, 0.25E-2, true, null], "b": {}, "c": "x\\u00e9\\n\\/"}');
});

test("any JSON: malformed documents are refused at the first byte that cannot continue them", () => {
  refuses(ANY, '{"a" 1}', '{"a" ');
  refuses(ANY, "[1,]", "[1,");
  refuses(ANY, "01", "0");
  refuses(ANY, "-a", "-");
  refuses(ANY, "1.e5", "1.");
  refuses(ANY, '"a\u0001"', '"a');
  refuses(ANY, '"\\x"', '"\\');
  refuses(ANY, '"\\u12g4"', '"\\u12');
  refuses(ANY, "tru e", "tru");
  refuses(ANY, "{}}", "{}");
  refuses(ANY, '{"a":1,}', '{"a":1,');
  refuses(ANY, "[1] ", "[1]"); // nothing after the document, not even whitespace
  refuses(ANY, " [1]", ""); // nor before it
  incomplete(ANY, '{"a": [1, 2');
  incomplete(ANY, '"open');
  incomplete(ANY, "-");
});

test("whitespace between tokens is bounded: one space, or a newline and up to 20 indentation bytes", () => {
  accepts(ANY, '{ "a" : 1 }');
  accepts(ANY, '{\n  "a": [\n\t\t1\n  ]\n}');
  accepts(ANY, `[\n${" ".repeat(20)}1]`);
  refuses(ANY, '{  "a": 1}', "{ ");
  refuses(ANY, '{\n\n"a": 1}', "{\n");
  refuses(ANY, `[\n${" ".repeat(21)}1]`, `[\n${" ".repeat(20)}`);
  refuses(ANY, '{ \n"a": 1}', "{ ");
});

test("numbers are bounded (16 integer, 16 fraction, 3 exponent digits); integers take no fraction or exponent", () => {
  const int = compileSchema({ type: "integer" });
  accepts(int, "-1234567890123456");
  refuses(int, "12345678901234567", "1234567890123456");
  refuses(int, "1.5", "1");
  refuses(int, "1e3", "1");
  const num = compileSchema({ type: "number" });
  accepts(num, "-0.1234567890123456e-123");
  refuses(num, "1e1234", "1e123");
  const top = run(num, "12");
  assert.ok(top.complete && !finished(top.stacks), "a top-level number may end or go on");
  const obj = run(ANY_OBJECT, "{}");
  assert.ok(finished(obj.stacks), "a closed object is the end");
});

test("numeric bounds: minimum, maximum and their exclusive forms (and draft 4's), exactly", () => {
  const pct = compileSchema({ type: "integer", minimum: 0, maximum: 100 });
  for (const doc of ["0", "7", "100", "-0"]) accepts(pct, doc);
  refuses(pct, "-1", "-");
  refuses(pct, "101", "10");
  refuses(pct, "1000", "100");
  const positive = compileSchema({ type: "integer", exclusiveMinimum: 0 });
  refuses(positive, "0", "");
  accepts(positive, "1");
  const draft4 = compileSchema({ type: "number", minimum: 0, exclusiveMinimum: true });
  incomplete(draft4, "0"); // a prefix of 0.001, but not a document
  accepts(draft4, "0.001");
  const unit = compileSchema({ type: "array", items: { type: "number", minimum: 0.5, exclusiveMaximum: 1 } });
  accepts(unit, "[0.5, 0.75, 0.9999]");
  refuses(unit, "[0.4]", "[0.");
  refuses(unit, "[0]", "[0"); // 0 could still become 0.5..., but it ends here
  refuses(unit, "[1]", "[");
  refuses(unit, "[0.5e0]", "[0.5"); // no exponents where there are bounds
  // Exact decimals: 0.3 is 0.3 (not the float just above it), 2^53 - 1 is itself.
  const third = compileSchema({ type: "number", maximum: 0.3 });
  accepts(third, "0.3");
  refuses(third, "0.30000000000001", "0.3000000000000");
  // multipleOf (integers): every digit must leave a multiple within the bounds reachable.
  const fives = compileSchema({ type: "integer", multipleOf: 5, minimum: -12, maximum: 23 });
  for (const doc of ["0", "-10", "15", "20"]) accepts(fives, doc);
  refuses(fives, "7", "");
  incomplete(fives, "2"); // 20 is still ahead
  refuses(fives, "24", "2");
  refuses(fives, "-13", "-1");
  const big = compileSchema({ type: "integer", maximum: Number.MAX_SAFE_INTEGER });
  accepts(big, "9007199254740991");
  refuses(big, "9007199254740992", "900719925474099");
});

test("numeric bounds, at random: a number is accepted exactly when it is within them, and every accepted prefix can still end within them", () => {
  const rng = new Rng(17);
  const pickInt = (n: number) => Math.floor(rng.next() * n);
  const decimalText = () => {
    const neg = rng.next() < 0.4 ? "-" : "";
    const int = String(pickInt(rng.next() < 0.5 ? 10 : 2000));
    const frac = rng.next() < 0.5 ? "." + String(pickInt(1000)).padStart(1 + pickInt(3), "0") : "";
    return neg + int + frac;
  };
  const exact = (t: string) => {
    const [i, f = ""] = t.replace("-", "").split(".");
    return { n: BigInt(i + f) * (t.startsWith("-") ? -1n : 1n), s: f.length };
  };
  const le = (a: { n: bigint; s: number }, b: { n: bigint; s: number }) =>
    a.n * 10n ** BigInt(Math.max(a.s, b.s) - a.s) <= b.n * 10n ** BigInt(Math.max(a.s, b.s) - b.s);
  let checked = 0;
  for (let trial = 0; trial < 120; trial++) {
    const integer = rng.next() < 0.5;
    const schema: Record<string, unknown> = { type: integer ? "integer" : "number" };
    const lo = rng.next() < 0.7 ? decimalText() : undefined;
    const hi = rng.next() < 0.7 ? decimalText() : undefined;
    if (lo !== undefined) schema[rng.next() < 0.5 ? "minimum" : "exclusiveMinimum"] = Number(lo);
    if (hi !== undefined) schema[rng.next() < 0.5 ? "maximum" : "exclusiveMaximum"] = Number(hi);
    if (integer && rng.next() < 0.4) schema.multipleOf = 2 + pickInt(9);
    let node: Node;
    try {
      node = compileSchema({ type: "array", items: schema });
    } catch {
      continue; // bounds nothing meets
    }
    const inside = (t: string) => {
      const v = exact(t);
      if (integer && v.s > 0) return false;
      if (schema.multipleOf !== undefined && v.n % BigInt(schema.multipleOf as number) !== 0n) return false;
      const L = schema.minimum ?? schema.exclusiveMinimum;
      const H = schema.maximum ?? schema.exclusiveMaximum;
      if (L !== undefined) {
        const l = exact(JSON.stringify(L));
        if (schema.minimum !== undefined ? !le(l, v) : le(v, l)) return false;
      }
      if (H !== undefined) {
        const h = exact(JSON.stringify(H));
        if (schema.maximum !== undefined ? !le(v, h) : le(h, v)) return false;
      }
      return true;
    };
    for (let k = 0; k < 40; k++) {
      const t = decimalText();
      const r = run(node, `[${t}]`);
      assert.equal(r.refusedAt === -1, inside(t), `${JSON.stringify(schema)}: ${t}`);
      // Every prefix the automaton took can still end within the bounds (a search over digits).
      const taken = r.refusedAt === -1 ? t.length : r.refusedAt - 1;
      const prefix = `[${t.slice(0, taken)}`;
      const canFinish = (stacks: Stack[], depth: number): boolean => {
        if (feed(stacks, 0x5d).length > 0) return true;
        if (depth === 0) return false;
        return [..."0123456789."].some((c) => {
          const next = feed(stacks, c.charCodeAt(0));
          return next.length > 0 && canFinish(next, depth - 1);
        });
      };
      if (taken > 0) assert.ok(canFinish(run(node, prefix).stacks, 4), `${JSON.stringify(schema)}: ${prefix}…`);
      checked++;
    }
  }
  assert.ok(checked > 2000, `checked ${checked}`);
});

/** Whether our NFA matches `text` (JSON Schema's search semantics, as RegExp.test). */
function nfaMatches(pattern: string, text: string): boolean {
  const re = Regex.compile(pattern);
  let state = re.initial();
  for (const ch of text) {
    // ECMAScript (without the u flag) sees UTF-16 units; the automaton feeds raw characters as code
    // points, so these tests keep to the BMP.
    state = re.step(state, ch.codePointAt(0)!);
    if (state < 0) return false;
  }
  return re.matches(state);
}

test("utf8CharLength: a character's length exactly where a strict UTF-8 decoder reads one whole character", () => {
  const strict = new TextDecoder("utf-8", { fatal: true });
  const oracle = (bytes: Uint8Array): number => {
    for (let len = 1; len <= Math.min(4, bytes.length); len++) {
      try {
        const s = strict.decode(bytes.subarray(0, len));
        if ([...s].length === 1) return len;
      } catch {
        // not (yet) a whole character
      }
    }
    return 0;
  };
  const rng = new Rng(29);
  const leads = [0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff];
  const conts = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff];
  for (let i = 0; i < 20000; i++) {
    const bytes = Uint8Array.from({ length: 1 + Math.floor(rng.next() * 4) }, (_, j) =>
      j === 0 ? leads[Math.floor(rng.next() * leads.length)] : conts[Math.floor(rng.next() * conts.length)],
    );
    assert.equal(utf8CharLength(bytes, 0), oracle(bytes), `bytes ${[...bytes].map((b) => b.toString(16))}`);
  }
  for (const ch of ["A", "é", "✓", "𝄞"]) assert.equal(utf8CharLength(utf8.encode(ch), 0), utf8.encode(ch).length);
});

test("pattern: the NFA matches exactly what ECMAScript's RegExp.test does, on many patterns and strings", () => {
  const patterns = [
    "^\\d{3}-\\d{4}$",
    "^[A-Z][a-z]+( [A-Z][a-z]+)*$",
    "ab|cd",
    "^(foo|bar)?baz$",
    "^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$",
    "x{2,3}",
    "^a.c$",
    "^[\\w.-]+$",
    "^\\u00e9+$",
    "^(?:ab){2}$",
    "^(?<year>\\d{4})$",
    "colou?r",
    "^[+-]?\\d+(\\.\\d+)?$",
    "^\\s*$",
    "[^a-z]",
    "^[\\]\\-a]+$",
    "^a{0,2}b*?c+?$",
    "^(a|ab)(c|bcd)(d*)$",
    "^$",
    "^\\x41\\t\\D\\W\\S$",
  ];
  const alphabet = [
    "a",
    "b",
    "c",
    "d",
    "x",
    "A",
    "Z",
    "0",
    "5",
    "9",
    "-",
    ".",
    "@",
    " ",
    "\t",
    "\n",
    "é",
    "]",
    "+",
    "_",
  ];
  const rng = new Rng(23);
  let checked = 0;
  for (const p of patterns) {
    const js = new RegExp(p);
    const samples = [
      "",
      "123-4567",
      "Ada Lovelace",
      "foobaz",
      "baz",
      "a@b.io",
      "xxx",
      "abc",
      "a-b.c_d",
      "éé",
      "abab",
      "2024",
      "color",
      "-1.25",
      "  ",
      "]-a",
      "aabccc",
      "abcd",
      "A\t!\n ",
    ];
    for (let i = 0; i < 300; i++)
      samples.push(
        Array.from(
          { length: Math.floor(rng.next() * 8) },
          () => alphabet[Math.floor(rng.next() * alphabet.length)],
        ).join(""),
      );
    for (const text of samples) {
      assert.equal(nfaMatches(p, text), js.test(text), `/${p}/ on ${JSON.stringify(text)}`);
      checked++;
    }
  }
  assert.ok(checked > 6000);
});

test("pattern and format in JSON strings: decoded characters (escapes, UTF-8) go through the pattern", () => {
  const code = compileSchema({ type: "string", pattern: "^[A-Z]{3}-\\d{2}$" });
  accepts(code, '"ABC-12"');
  refuses(code, '"AB1-12"', '"AB');
  refuses(code, '"ABC-1"', '"ABC-1');
  refuses(code, '"ABC-123"', '"ABC-12');
  accepts(code, '"\\u0041BC-12"'); // an escaped A is an A
  const lines = compileSchema({ type: "string", pattern: "^a\\nb$" });
  accepts(lines, '"a\\nb"');
  const accent = compileSchema({ type: "string", pattern: "^é+$", maxLength: 2 });
  accepts(accent, '"éé"');
  accepts(accent, '"\\u00e9"');
  refuses(accent, '"eé"', '"');
  refuses(accent, '"ééé"', '"éé');
  const contains = compileSchema({ type: "string", pattern: "cat" }); // anywhere, as JSON Schema says
  accepts(contains, '"a cat sat"');
  incomplete(contains, '"a dog');
  const when = compileSchema({ type: "string", format: "date-time" });
  accepts(when, '"2024-02-29T23:59:60Z"'.replace("60", "59"));
  accepts(when, '"1999-12-31T00:00:00.123+05:30"');
  refuses(when, '"2024-13-01T00:00:00Z"', '"2024-1');
  refuses(when, '"2024-01-01 00:00:00Z"', '"2024-01-01');
  accepts(compileSchema({ format: "uuid", type: "string" }), '"123e4567-e89b-12d3-a456-426614174000"');
  accepts(compileSchema({ format: "email", type: "string" }), '"not checked: an annotation"');
  // Format names that are Object.prototype's properties are annotations too (not its functions).
  for (const format of ["constructor", "toString", "__proto__"])
    accepts(compileSchema({ format, type: "string" }), '"any text"');
});

test("objects: properties in schema order, required ones never skipped, no others; maps take any keys", () => {
  const person = compileSchema({
    type: "object",
    properties: {
      nick: { type: "string" },
      name: { type: "string" },
      age: { type: "integer" },
      tags: { type: "array" },
    },
    required: ["name", "age"],
  });
  accepts(person, '{"name": "Ada", "age": 36}');
  accepts(person, '{"nick":"A","name":"Ada","age":36,"tags":["x"]}');
  refuses(person, '{"age": 36}', '{"');
  refuses(person, '{"name": "Ada"}', '{"name": "Ada"');
  refuses(person, '{"name": "Ada", "age": 36, "extra": 1}', '{"name": "Ada", "age": 36, "');
  refuses(person, '{"name": "Ada", "age": 36, "nick": "A"}', '{"name": "Ada", "age": 36, "');
  refuses(person, '{"nam": 1}', '{"nam');
  refuses(person, '{"name": 5}', '{"name": ');
  incomplete(person, '{"name": "Ada", "age": 36,');
  const escaped = compileSchema({ type: "object", properties: { 'a"b\n': { const: 1 } }, required: ['a"b\n'] });
  accepts(escaped, '{"a\\"b\\n": 1}');
  const map = compileSchema({ type: "object", additionalProperties: { type: "integer" } });
  accepts(map, '{"x": 1, "y\\n": -2}');
  accepts(map, "{}");
  refuses(map, '{"x": "1"}', '{"x": ');
  accepts(ANY_OBJECT, '{"x": [{}]}');
  refuses(ANY_OBJECT, "[1]", "");
});

test("strings, arrays, enums, const, unions and recursive $refs", () => {
  const s = compileSchema({ type: "string", minLength: 2, maxLength: 3 });
  accepts(s, '"ab"');
  accepts(s, '"é\\n✓"'); // three characters: UTF-8 and escapes count once
  accepts(ANY, '"𝄞 ✓ é"');
  // Only well-formed UTF-8: no stray continuation bytes, overlong forms or surrogates.
  for (const bad of [
    [0x22, 0x80],
    [0x22, 0xc0, 0x80],
    [0x22, 0xe0, 0x80],
    [0x22, 0xed, 0xa0],
    [0x22, 0xc3, 0x22],
    [0x22, 0xf5],
  ]) {
    let st = initial(ANY);
    for (const b of bad) st = feed(st, b);
    assert.equal(st.length, 0, `bytes ${bad.map((b) => b.toString(16))} must be refused`);
  }
  refuses(s, '"a"', '"a');
  refuses(s, '"abcd"', '"abc');
  const arr = compileSchema({ type: "array", items: { type: "boolean" }, minItems: 1, maxItems: 2 });
  accepts(arr, "[true, false]");
  refuses(arr, "[]", "[");
  refuses(arr, "[true,false,true]", "[true,false");
  refuses(arr, "[1]", "[");
  // A tuple as pydantic writes Tuple[int, str]: prefixItems, items false, min = max = 2.
  const pair = compileSchema({
    type: "array",
    prefixItems: [{ type: "integer" }, { type: "string" }],
    items: false,
    minItems: 2,
    maxItems: 2,
  });
  accepts(pair, '[1, "a"]');
  refuses(pair, '["a", 1]', "[");
  refuses(pair, '[1, "a", 2]', '[1, "a"');
  refuses(pair, "[1]", "[1");
  const head = compileSchema({ type: "array", prefixItems: [{ const: "id" }], items: { type: "integer" } });
  accepts(head, '["id", 1, 2]');
  accepts(head, "[]");
  refuses(head, '["id", "x"]', '["id", ');
  const e = compileSchema({ enum: ["red", 1, 12, null, { a: [1] }] });
  for (const doc of ['"red"', "1", "12", "null", '{"a":[1]}']) accepts(e, doc);
  refuses(e, '"re"', '"re');
  refuses(e, "13", "1");
  refuses(e, '{"a": [1]}', '{"a":'); // const/enum values are matched in JSON.stringify's form
  const u = compileSchema({ anyOf: [{ type: "integer" }, { type: "string", maxLength: 1 }], description: "x" });
  accepts(u, "5");
  accepts(u, '"a"');
  refuses(u, '"ab"', '"a');
  const nullable = compileSchema({ type: ["string", "null"] });
  accepts(nullable, "null");
  accepts(nullable, '"x"');
  const tree = compileSchema({
    $defs: {
      node: {
        type: "object",
        properties: { v: { type: "integer" }, kids: { type: "array", items: { $ref: "#/$defs/node" } } },
        required: ["v", "kids"],
      },
    },
    $ref: "#/$defs/node",
  });
  accepts(tree, '{"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3, "kids": [{"v": 4, "kids": []}]}]}');
  refuses(tree, '{"v": 1, "kids": [{"v": 2}]}', '{"v": 1, "kids": [{"v": 2');
  // pydantic's form: a property that refers to a model through allOf, with annotations beside.
  const pyd = compileSchema({
    $defs: { Pet: { properties: { kind: { enum: ["cat", "dog"], title: "Kind" } }, required: ["kind"], title: "Pet" } },
    properties: { pet: { allOf: [{ $ref: "#/$defs/Pet" }], description: "the pet" } },
    required: ["pet"],
    title: "Owner",
    type: "object",
  });
  accepts(pyd, '{"pet": {"kind": "dog"}}');
});

test("compileSchema: what it cannot enforce, or that names nothing, is an error naming the place", () => {
  const bad = (schema: unknown, msg: RegExp) =>
    assert.throws(
      () => compileSchema(schema),
      (e: unknown) => e instanceof UsageError && msg.test((e as Error).message),
    );
  bad({ type: "string", pattern: "(?=a)b" }, /#: pattern "\(\?=a\)b": lookaround is not supported/);
  bad({ type: "string", pattern: "(a)\\1" }, /backreferences are not supported/);
  bad({ type: "array", uniqueItems: true }, /#: "uniqueItems" is not supported/);
  bad({ type: "string", pattern: "(a{1000}){1000}" }, /too large \(more than 20000 NFA states\)/);
  bad({ $ref: "#" }, /refers to itself with no value in between/);
  bad({ anyOf: [{ type: "null" }, { $ref: "#" }] }, /refers to itself with no value in between/);
  accepts(compileSchema({ anyOf: [{ type: "null" }, { type: "array", items: { $ref: "#" } }] }), "[[null], []]");
  bad({ type: "object", properties: { n: { type: "number", multipleOf: 2 } } }, /#\/properties\/n: "multipleOf"/);
  bad({ type: "integer", minimum: 2.1, maximum: 2.9 }, /no integer of up to 16 digits is within the bounds/);
  bad({ type: "number", exclusiveMinimum: 1, maximum: 1 }, /no number .* within the bounds/);
  bad({ type: "number", minimum: "0" }, /"minimum" must be a number/);
  bad({ type: "object", properties: {}, required: ["x"] }, /"x" is not in "properties"/);
  bad({ $ref: "#/$defs/missing" }, /names nothing/);
  bad({ $ref: "#/$defs/constructor", $defs: {} }, /names nothing/); // not Object's own property
  bad({ $ref: "http://example.com/s.json" }, /only "#"/);
  bad({ type: "strnig" }, /unknown type "strnig"/);
  bad({ type: "array", minItems: 3, maxItems: 1 }, /"maxItems" is below "minItems"/);
  bad(false, /false accepts nothing/);
  bad("string", /must be an object or a boolean/);
  // Listed properties only, whatever additionalProperties allows beside them (still checked as a schema).
  refuses(
    compileSchema({ type: "object", properties: { a: {} }, additionalProperties: true }),
    '{"a": 1, "b"',
    '{"a": 1',
  );
  bad({ type: "object", properties: { a: {} }, additionalProperties: { pattern: "(?!x)" } }, /lookaround/);
  // Keywords of one type imply it where "type" is missing (a valid subset of what the schema allows).
  refuses(compileSchema({ pattern: "^a$" }), '"b"', '"');
  refuses(compileSchema({ minimum: 3 }), "-1", "");
  incomplete(compileSchema({ minimum: 3 }), "2"); // 2 could still become 20
  assert.equal(compileSchema({}).t, "any");
  assert.equal(compileSchema(true).t, "any");
});

/** The tokens a brute force allows from `stacks`: every token run from scratch through the automaton. */
function bruteForce(vocab: TokenVocabulary, stacks: Stack[]): Set<number> {
  const ok = new Set<number>();
  for (let id = 0; id < vocab.size; id++) {
    if (vocab.eos.has(id)) {
      if (accepting(stacks)) ok.add(id);
      continue;
    }
    if (vocab.empty[id]) continue;
    if (feedAll(stacks, vocab.data, vocab.start[id], vocab.start[id + 1]) !== null) ok.add(id);
  }
  return ok;
}

test("vocabulary masks equal a token-by-token brute force at every step of documents (built-in model's tokenizer)", () => {
  const model = loadModel(defaultModelDir());
  const vocab = new TokenVocabulary(model.tokenizer.tokenBytes(), model.eosIds);
  const schema = compileSchema({
    type: "object",
    properties: {
      name: { type: "string", maxLength: 12 },
      n: { type: "integer" },
      list: { type: "array", items: { anyOf: [{ type: "number" }, { type: "string" }] } },
      free: { type: "string" },
      extra: { type: "object" },
    },
    required: ["name", "n", "list", "free"],
  });
  const doc =
    '{"name": "Ada \\"L\\"", "n": -12, "list": [1.5, "two", 3e2], "free": "a long \\n text é", "extra": {"k": [true]}}';
  let checked = 0;
  for (const [node, text] of [
    [schema, doc],
    [ANY, JSON.stringify(randomValue(new Rng(3)), null, 2)],
  ] as const) {
    const c = new GrammarConstraint(node, vocab);
    // Walk the document token by token as the tokenizer splits it, checking the mask before each token.
    const ids = model.tokenizer.encode(text, false);
    let stacks = initial(node);
    for (const id of [...ids, ...model.eosIds].slice(0, ids.length + 1)) {
      const logits = new Float32Array(model.config.vocab);
      c.mask(logits);
      const allowed = new Set([...logits.keys()].filter((i) => logits[i] === 0));
      assert.deepEqual(allowed, bruteForce(vocab, stacks));
      assert.ok(allowed.has(id), `token ${id} of the document must be allowed`);
      checked++;
      if (model.eosIds.has(id)) break;
      c.advance(id);
      stacks = feedAll(stacks, vocab.data, vocab.start[id], vocab.start[id + 1])!;
    }
  }
  assert.ok(checked > 40, `checked ${checked} steps`);
});

test("vocabulary masks equal a brute force on a vocabulary of JSON fragments (every substring of the documents)", () => {
  const schema = compileSchema({
    type: "object",
    properties: {
      id: { type: "integer" },
      label: { enum: ["on", "off", 12, 125] },
      text: { type: "string", minLength: 1, maxLength: 30 },
      code: { type: "string", pattern: "^[A-Z]{2}\\d+$" },
      rest: { type: "array", items: { type: ["number", "null", "string"] }, maxItems: 4 },
      any: {},
    },
    required: ["id", "label", "text"],
  });
  const docs: [Node, string][] = [
    [
      schema,
      '{"id": -120, "label": 125, "text": "é \\"q\\" \\u00e9 ✓𝄞", "code": "AB12", "rest": [1.5e3, null, "x"], "any": {"k": [true, {}]}}',
    ],
    [schema, '{\n  "id": 7,\n  "label": "off",\n  "text": "a"\n}'],
    [ANY, JSON.stringify(randomValue(new Rng(11)), null, 2)],
    // Raw text: a whole-reply regex (its own mask path) and a GBNF grammar (by groups).
    [wholeRegex('[a-zé"\\\\]{1,5}(-[0-9]+)*!?'), 'é"b\\-12-3!'],
    [compileGbnf(ARITHMETIC), "1+(22*3)-(4)"],
    // A class repeated inside a rule (one regex frame, followed by more grammar).
    [compileGbnf('root ::= "<" [^<>]* ">" [a-z]{0,3}'), '<ab c"é>xy'],
  ];
  // Every substring of 1..6 bytes of the documents, plus every single byte: tokens whose first two
  // bytes fit where the rest does not, partial UTF-8, escapes split across tokens.
  const pieces = new Set<string>();
  const all = docs.map(([, d]) => utf8.encode(d));
  for (const d of all)
    for (let i = 0; i < d.length; i++)
      for (let n = 1; n <= 6 && i + n <= d.length; n++) pieces.add(d.subarray(i, i + n).join(","));
  for (let b = 0; b < 256; b++) pieces.add(String(b));
  const tokens = [...pieces].map((p) => Uint8Array.from(p.split(",").map(Number)));
  const eos = tokens.length;
  const vocab = new TokenVocabulary([...tokens, null], new Set([eos]));
  const index = new Map([...pieces].map((p, i) => [p, i]));
  const rng = new Rng(5);
  let checked = 0;
  for (const [[node], bytes] of docs.map((d, i) => [d, all[i]] as const)) {
    const c = new GrammarConstraint(node, vocab);
    let stacks = initial(node);
    for (let i = 0; i <= bytes.length;) {
      const logits = new Float32Array(vocab.size);
      c.mask(logits);
      const allowed = new Set([...logits.keys()].filter((j) => logits[j] === 0));
      assert.deepEqual(allowed, bruteForce(vocab, stacks), `at byte ${i} of ${new TextDecoder().decode(bytes)}`);
      checked++;
      if (i === bytes.length) {
        assert.ok(allowed.has(eos));
        break;
      }
      const n = Math.min(1 + Math.floor(rng.next() * 6), bytes.length - i);
      const id = index.get(bytes.subarray(i, i + n).join(","))!;
      assert.ok(allowed.has(id));
      c.advance(id);
      stacks = feedAll(stacks, vocab.data, vocab.start[id], vocab.start[id + 1])!;
      i += n;
    }
  }
  assert.ok(checked > 60, `checked ${checked} steps`);
});

test("token bytes: byte-level BPE and SentencePiece vocabularies spell what decode() writes", (t) => {
  const model = loadModel(defaultModelDir());
  const texts = ["Hello, world!", ' {"a": [1, 2.5], "b": "é✓"}\n', "tab\there  two  spaces"];
  const check = (tok: ModelTokenizer, text: string, stripLead: boolean) => {
    const ids = tok.encode(text, false);
    const bytes = tok.tokenBytes();
    const joined = Buffer.concat(ids.map((id) => Buffer.from(bytes[id] ?? new Uint8Array()))).toString("utf8");
    assert.equal(stripLead ? joined.replace(/^ /, "") : joined, tok.decode(ids), `tokens of ${JSON.stringify(text)}`);
  };
  for (const text of texts) check(model.tokenizer, text, false);
  // Special tokens write nothing.
  const special = model.tokenizer.tokenBytes().filter((b) => b === null).length;
  assert.ok(special >= 1);
  // A SentencePiece vocabulary (▁ for spaces, <0xNN> byte fallback), as Llama 2's tokenizer.json has it.
  const dir = tempDir(t);
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(sentencePieceTokenizer(400)));
  const spm = ModelTokenizer.load(dir);
  for (const text of ['the {"a": "é語"}', "a b c", ...texts]) check(spm, text, true);
  assert.equal(spm.tokenBytes()[0], null);
  assert.deepEqual(spm.tokenBytes()[3 + 0xe9], Uint8Array.of(0xe9));
});

/** Whether `v` fits the test's person schema (checked by hand, not by the automaton). */
function fitsPerson(v: unknown): boolean {
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  return (
    typeof o === "object" &&
    o !== null &&
    typeof o.name === "string" &&
    [...o.name].length <= 16 &&
    Number.isInteger(o.age) &&
    Array.isArray(o.tags) &&
    o.tags.length <= 3 &&
    o.tags.every((x) => x === "red" || x === "blue" || x === 7) &&
    (o.alive === undefined || typeof o.alive === "boolean") &&
    keys.every((k) => ["name", "age", "tags", "alive"].includes(k))
  );
}
const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 16 },
    age: { type: "integer" },
    tags: { type: "array", items: { enum: ["red", "blue", 7] }, maxItems: 3 },
    alive: { type: "boolean" },
  },
  required: ["name", "age", "tags"],
};

test("the engine writes schema-valid JSON at any temperature, and ends when the document does", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  const grammar = compileSchema(PERSON);
  for (const [temperature, seed] of [
    [0, 1],
    [0.7, 2],
    [1, 3],
    [1.5, 4],
    [1, 5],
  ]) {
    let done: { text: string; finishReason: string; ids: number[] } | undefined;
    for await (const ev of session.generate("The person:", { maxTokens: 400, temperature, seed, grammar }))
      if (ev.type === "done") done = ev;
    assert.ok(done);
    assert.ok(done.finishReason === "stop" || done.finishReason === "eos", `finish ${done.finishReason}: ${done.text}`);
    const v = JSON.parse(done.text);
    assert.ok(fitsPerson(v), `temperature ${temperature}: ${done.text}`);
  }
  // Without a grammar the same model does not write JSON: the grammar is what makes it.
  let free = "";
  for await (const ev of session.generate("The person:", { maxTokens: 40, temperature: 1, seed: 3 }))
    if (ev.type === "done") free = ev.text;
  assert.throws(() => JSON.parse(free));
});

test("the engine writes patterns, formats and bounded numbers as the schema asks", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  const grammar = compileSchema({
    type: "object",
    properties: {
      day: { type: "string", format: "date" },
      code: { type: "string", pattern: "^[A-Z]{3}-\\d{2}$" },
      score: { type: "number", minimum: -1, maximum: 1 },
      count: { type: "integer", exclusiveMinimum: 0, maximum: 9 },
    },
    required: ["day", "code", "score", "count"],
  });
  for (const [temperature, seed] of [
    [0, 1],
    [1, 2],
    [1.3, 3],
  ]) {
    let done: { text: string; finishReason: string } | undefined;
    for await (const ev of session.generate("Today:", { maxTokens: 300, temperature, seed, grammar }))
      if (ev.type === "done") done = ev;
    assert.ok(done && done.finishReason === "stop", done?.text);
    const v = JSON.parse(done.text) as { day: string; code: string; score: number; count: number };
    assert.match(v.day, /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/, done.text);
    assert.match(v.code, /^[A-Z]{3}-\d{2}$/, done.text);
    assert.ok(v.score >= -1 && v.score <= 1, done.text);
    assert.ok(Number.isInteger(v.count) && v.count > 0 && v.count <= 9, done.text);
  }
});

test("structured output with HiRE's output layer: a step whose candidates the grammar all rules out computes the allowed tokens' rows", async (t) => {
  const dir = tempDir(t);
  await makeModel({ arch: "llama", dtype: "f32", seed: 11, out: join(dir, "m") });
  const model = loadModel(join(dir, "m"));
  const session = new Session(model);
  session.sparsity.update({
    ffn: { method: "hire", k: 0.25, oversample: 2 },
    head: { method: "hire", k: 2, oversample: 1 }, // two candidates a step
  });
  // Count the steps that needed more than HiRE's candidates, and check each exact row against the
  // whole layer's logit of the same token.
  let rows = 0;
  const tf = session.transformer;
  const exactLogits = tf.exactLogits.bind(tf);
  tf.exactLogits = (ids) => {
    rows++;
    const exact = exactLogits(ids)!;
    const dense = tf.denseLogits();
    ids.forEach((id, i) =>
      assert.ok(Math.abs(exact[i] - dense[id]) < 1e-4, `token ${id}: ${exact[i]} vs ${dense[id]}`),
    );
    return exact;
  };
  for (const seed of [1, 2, 3]) {
    let done: { text: string; finishReason: string } | undefined;
    for await (const ev of session.generate("hello", {
      maxTokens: 300,
      temperature: 1,
      seed,
      grammar: compileSchema(PERSON),
    }))
      if (ev.type === "done") done = ev;
    assert.ok(done && (done.finishReason === "stop" || done.finishReason === "eos"), done?.text);
    assert.ok(fitsPerson(JSON.parse(done.text)), done.text);
  }
  assert.ok(rows > 0, "with two candidates a step, some steps must have needed the allowed tokens' rows");
});

test("a triggered grammar holds from the trigger (even across tokens) to the document's end, then lets go", () => {
  const enc = new TextEncoder();
  const pieces = ["Hi", " there", "<tool", "_call>", "\n", "{", '"a"', ":", " 1", "}", "!", "<tool_call>{", "x", '"b"'];
  const vocab = new TokenVocabulary(
    pieces.map((p) => enc.encode(p)),
    new Set(),
  );
  const id = (p: string) => pieces.indexOf(p);
  const grammar = compileSchema({ type: "object", properties: { a: { type: "integer" } }, required: ["a"] });
  const g = new TriggeredGrammar(enc.encode("<tool_call>"), grammar, vocab);
  const allowed = () => {
    const logits = new Float32Array(pieces.length);
    g.current!.mask(logits);
    return pieces.filter((_, i) => logits[i] === 0);
  };
  for (const p of ["Hi", " there", "<tool"]) {
    g.advance(id(p));
    assert.equal(g.current, null, `free after ${p}`);
  }
  g.advance(id("_call>"));
  assert.ok(g.current, "the trigger spans two tokens");
  assert.deepEqual(allowed(), ["\n", "{"]); // whitespace may lead the document
  for (const p of ["\n", "{", '"a"', ":", " 1"]) g.advance(id(p));
  assert.deepEqual(allowed(), ["\n", "}"]);
  g.advance(id("}"));
  assert.equal(g.current, null, "free again once the document is complete");
  g.advance(id("!"));
  assert.equal(g.current, null);
  // A token that writes the trigger and more: the grammar starts past the trigger, with what it took.
  g.advance(id("<tool_call>{"));
  assert.deepEqual(allowed(), ["\n", '"a"']);
});

test("an opening starts the grammar only where the reply opens with it (after whitespace), from the opening's own bytes", () => {
  const enc = new TextEncoder();
  const pieces = [" ", '{"', "name", '":', ' "f"', "}", "Hi", '{"name":', '{"names', "\n"];
  const vocab = new TokenVocabulary(
    pieces.map((p) => enc.encode(p)),
    new Set(),
  );
  const id = (p: string) => pieces.indexOf(p);
  const grammar = compileSchema({ type: "object", properties: { name: { const: "f" } }, required: ["name"] });
  const allowed = (g: TriggeredGrammar) => {
    const logits = new Float32Array(pieces.length);
    g.current!.mask(logits);
    return pieces.filter((_, i) => logits[i] === 0);
  };
  const walk = (g: TriggeredGrammar, ps: string[]) => ps.forEach((p) => g.advance(id(p)));
  // Decided over three tokens: whitespace, then the opening's first bytes, then the rest of it.
  let g = new TriggeredGrammar(null, grammar, vocab, enc.encode('{"name"'));
  walk(g, [" ", '{"']);
  assert.equal(g.current, null, "not decided before the whole opening is written");
  walk(g, ["name"]);
  assert.equal(g.current, null, '{"name without its quote is not the opening yet');
  walk(g, ['":']);
  assert.ok(g.current, "the opening is written: the grammar holds, having taken it");
  assert.deepEqual(allowed(g), [" ", ' "f"', "\n"]);
  walk(g, [' "f"', "}"]);
  assert.equal(g.current, null, "free once the document is complete");
  walk(g, ['{"name":']);
  assert.equal(g.current, null, "an opening counts only at the reply's start");
  // In one token (and more than the opening); a reply that opens otherwise stays free.
  g = new TriggeredGrammar(null, grammar, vocab, enc.encode('{"name"'));
  walk(g, ['{"name":']);
  assert.deepEqual(allowed(g), [" ", ' "f"', "\n"]);
  for (const start of [
    ["Hi", '{"name":'],
    ['{"names', '":'],
  ]) {
    g = new TriggeredGrammar(null, grammar, vocab, enc.encode('{"name"'));
    walk(g, start);
    assert.equal(g.current, null, start.join(""));
  }
});

test("a whole-reply regex: raw text matched from start to end, UTF-8 refused at the first byte that cannot fit", () => {
  const enc = new TextEncoder();
  const walk = (node: Node, text: string | Uint8Array) => {
    let st = initial(node);
    for (const b of typeof text === "string" ? enc.encode(text) : text) {
      st = feed(st, b);
      if (st.length === 0) return null;
    }
    return st;
  };
  const mail = wholeRegex("[a-z]+@[a-z]+\\.(com|org)");
  assert.ok(accepting(walk(mail, "ada@example.org")!));
  assert.ok(!accepting(walk(mail, "ada@example.or")!), "a prefix is not a match");
  assert.equal(walk(mail, " ada@x.com"), null, "no whitespace: the text is the reply");
  assert.equal(walk(mail, "Ada"), null);
  assert.ok(finished(walk(mail, "ada@x.com")!), "nothing can follow a whole match here");
  // UTF-8: Greek letters only; é's lead byte (C3) cannot start one, Greek's (CE) can.
  const greek = wholeRegex("[α-ω]+");
  assert.ok(accepting(walk(greek, "αβγ")!));
  assert.equal(walk(greek, Uint8Array.of(0xc3)), null);
  assert.ok(walk(greek, Uint8Array.of(0xce)));
  assert.equal(walk(greek, Uint8Array.of(0xce, 0x91)), null, "Α (U+0391) is not in α-ω");
  // The same rule in a string with a pattern.
  const word = compileSchema({ type: "string", pattern: "^[a-z]*$" });
  assert.equal(walk(word, Uint8Array.of(0x22, 0xc3)), null, "a lead byte no character of the pattern starts with");
  // Choices: exactly one of the strings.
  const sentiment = choice(["positive", "negative", "neutral"]);
  assert.ok(finished(walk(sentiment, "neutral")!));
  assert.equal(walk(sentiment, "neutrals"), null);
  assert.throws(() => wholeRegex("(?=a)b"), UsageError);
  assert.throws(() => wholeRegex("x{0}"), /matches only the empty text/);
});

test("the engine held to a whole-reply regex or a choice, at any temperature", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  for (const temperature of [0, 1, 1.5]) {
    for (const [grammar, check] of [
      [wholeRegex("(yes|no), [0-9]{1,3} (apples|pears)"), /^(yes|no), [0-9]{1,3} (apples|pears)$/],
      [choice(["positive", "negative", "neutral"]), /^(positive|negative|neutral)$/],
    ] as const) {
      let done: { text: string; finishReason: string } | undefined;
      for await (const ev of session.generate("The answer:", { maxTokens: 40, temperature, seed: 3, grammar }))
        if (ev.type === "done") done = ev;
      assert.ok(done && ["stop", "eos"].includes(done.finishReason), JSON.stringify(done));
      assert.match(done.text, check, `temperature ${temperature}`);
    }
  }
});

const ARITHMETIC = `# integer arithmetic, as llama.cpp's examples write grammars
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= [0-9]{1,3} | "(" expr ")"
`;

/** Whether `t` is an expression of ARITHMETIC (an independent recursive-descent check). */
function isArithmetic(t: string): boolean {
  let i = 0;
  const factor = (): boolean => {
    if (t[i] === "(") {
      i++;
      if (!expr() || t[i] !== ")") return false;
      i++;
      return true;
    }
    const m = /^[0-9]{1,3}/.exec(t.slice(i));
    if (!m || /[0-9]/.test(t[i + m[0].length] ?? "")) return false;
    i += m[0].length;
    return true;
  };
  const chain = (item: () => boolean, ops: string): boolean => {
    if (!item()) return false;
    while (ops.includes(t[i] ?? "x")) {
      i++;
      if (!item()) return false;
    }
    return true;
  };
  const term = () => chain(factor, "*/");
  const expr = (): boolean => chain(term, "+-");
  return expr() && i === t.length;
}

test("GBNF grammars: rules, classes, repetitions, groups and recursion; what the automaton cannot run is refused", () => {
  const enc = new TextEncoder();
  const walk = (node: Node, text: string) => {
    let st = initial(node);
    for (const b of enc.encode(text)) {
      st = feed(st, b);
      if (st.length === 0) return null;
    }
    return st;
  };
  const arith = compileGbnf(ARITHMETIC);
  for (const t of ["1+(2*3)-4", "12", "1+(2*(3-4))/5", "(((7)))"]) assert.ok(accepting(walk(arith, t)!), t);
  for (const t of ["1+", "(1", "(1+2"]) assert.ok(walk(arith, t) && !accepting(walk(arith, t)!), `${t} is a prefix`);
  for (const t of ["+1", "1++2", "1234", " 1", "1 + 2", "()"]) assert.equal(walk(arith, t), null, t);
  // Random texts: the automaton and the independent parser agree on every whole text.
  const rng = new Rng(5);
  for (let n = 0; n < 400; n++) {
    let t = "";
    const len = 1 + Math.floor(rng.next() * 9);
    for (let k = 0; k < len; k++) t += "0123+-*/()"[Math.floor(rng.next() * 10)];
    const st = walk(arith, t);
    assert.equal(st !== null && accepting(st), isArithmetic(t), t);
  }
  // Whitespace only where the grammar writes it; escapes; negated classes; counted repetition; UTF-8.
  const list = compileGbnf(String.raw`root ::= "[" ws (item ("," ws item)*)? "]"
ws ::= [ \t\n]*
item ::= "\"" [^"\\\x00-\x1f]{1,4} "\""`);
  for (const t of ['[ "ab", "c"]', "[]", '["é語"]']) assert.ok(finished(walk(list, t)!), t);
  for (const t of ['["a",]', '["a" ]', '["abcde"]', '[""]']) assert.equal(walk(list, t), null, t);
  // A repeated class may match nothing: the byte then belongs to what follows.
  const digits = compileGbnf('root ::= "a" [0-9]* "b"');
  for (const t of ["ab", "a12b"]) assert.ok(finished(walk(digits, t)!), t);
  assert.equal(walk(digits, "a1x"), null);
  const sp = compileGbnf('root ::= "a" " " "b"');
  assert.ok(accepting(walk(sp, "a b")!));
  for (const t of ["a  b", " a b", "a\nb"]) assert.equal(walk(sp, t), null, JSON.stringify(t));
  // Refused, naming what is wrong.
  for (const [g, pattern] of [
    ['root ::= root "a" | "a"', /rule "root" is left-recursive/],
    ['root ::= x\nx ::= ("" | "b") x "a" | "c"', /rule "x" is left-recursive/],
    ['root ::= ("a"?)*', /a repetition of something that may be empty/],
    ['root ::= "a" x\nx ::= "b" x', /rule "root", rule "x" derive no finite text/],
    ["root ::= y", /rule "y" is used but not defined/],
    ['a ::= "x"', /no "root" rule/],
    ['root ::= "\\q"', /bad escape "\\q" \(at line 1, column 11\)/],
    ['root ::= "abc', /unterminated literal/],
    ["root ::= [b-a]", /the range b-a is empty/],
    ['root ::= "a"\nroot ::= "b"', /rule "root" is defined twice/],
    ['root ::= "a"{2000}', /repetitions are limited to 1000/],
  ] as const)
    assert.throws(
      () => compileGbnf(g),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message),
      g,
    );
});

test("a grammar compiled from the same text is the same grammar (a small LRU); a refusal is not kept", () => {
  let builds = 0;
  const build = (source: string) => () => (builds++, wholeRegex(source));
  const a = cachedGrammar("regex:[a-z]+", build("[a-z]+"));
  assert.equal(cachedGrammar("regex:[a-z]+", build("[a-z]+")), a);
  assert.equal(builds, 1);
  // 32 others push it out (it was the least recently used).
  for (let i = 0; i < 32; i++) cachedGrammar(`regex:x{${i + 1}}`, build(`x{${i + 1}}`));
  assert.notEqual(cachedGrammar("regex:[a-z]+", build("[a-z]+")), a);
  assert.equal(builds, 34);
  assert.throws(() => cachedGrammar("regex:(?=a)", build("(?=a)")), UsageError);
  assert.throws(() => cachedGrammar("regex:(?=a)", build("(?=a)")), UsageError);
  assert.equal(builds, 36, "a refused grammar is compiled (and refused) each time");
  // The vocabulary keeps a pattern's token lists, so a reused grammar's masks start warm.
  const vocab = new TokenVocabulary(
    ["ab", "c", "1"].map((t) => new TextEncoder().encode(t)),
    new Set(),
  );
  const first = new GrammarConstraint(a, vocab);
  first.advance(0); // "ab": the regex's frame is on top, between characters
  first.mask(new Float32Array(3));
  assert.ok(vocab.taken.get(vocab.wholeChars)?.get((a as { re: Regex }).re), "lists kept by the vocabulary");
});

test("the engine held to a GBNF grammar, at any temperature", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  // Nested pairs: recursive, and a reply ends once its outer pair closes.
  const pairs = compileGbnf('root ::= pair\npair ::= "(" item "," item ")"\nitem ::= [a-z] | pair');
  const isPairs = (t: string): boolean => {
    let i = 0;
    const item = (): boolean => (/[a-z]/.test(t[i] ?? "") ? (i++, true) : pair());
    const pair = (): boolean => {
      if (t[i] !== "(") return false;
      i++;
      if (!item() || t[i++] !== ",") return false;
      if (!item() || t[i++] !== ")") return false;
      return true;
    };
    return pair() && i === t.length;
  };
  const arith = compileGbnf(ARITHMETIC);
  for (const temperature of [0, 1, 1.5]) {
    const reply = async (grammar: Node) => {
      for await (const ev of session.generate("Compute:", { maxTokens: 60, temperature, seed: 7, grammar }))
        if (ev.type === "done") return ev;
      throw new Error("no reply");
    };
    const p = await reply(pairs);
    assert.equal(p.finishReason, "stop", p.text);
    assert.ok(isPairs(p.text), `${temperature}: ${p.text}`);
    // Arithmetic can always go on: a reply cut at maxTokens is a prefix the grammar takes; one that
    // ended (EOS) is an expression.
    const a = await reply(arith);
    if (a.finishReason === "length") assert.ok(feedAll(initial(arith), new TextEncoder().encode(a.text)), a.text);
    else assert.ok(isArithmetic(a.text), `${temperature}: ${a.text}`);
  }
});

test("the engine with a triggered grammar: free text, then a well-formed document after the trigger", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  // The trigger: what this model writes first here at temperature 0, so that it surely comes.
  let first = "";
  for await (const ev of session.generate("The person:", { maxTokens: 3, temperature: 0 }))
    if (ev.type === "done") first = model.tokenizer.decode(ev.ids.slice(0, 2));
  assert.ok(first.length > 0);
  let done: { text: string; finishReason: string } | undefined;
  for await (const ev of session.generate("The person:", {
    maxTokens: 300,
    temperature: 0,
    lazyGrammar: { trigger: first, grammar: compileSchema(PERSON) },
  }))
    if (ev.type === "done") done = ev;
  assert.ok(done && done.text.startsWith(first), done?.text);
  // The first prefix of what follows the trigger that parses is the document; it fits the schema.
  assert.ok(fitsPerson(firstDocument(done.text.slice(first.length))), done.text);
});

/** The first prefix of `text` that parses as JSON (the text is free again after a lazy grammar's document). */
function firstDocument(text: string): unknown {
  for (let k = 1; k <= text.length; k++) {
    try {
      return JSON.parse(text.slice(0, k));
    } catch {
      // not yet a whole document
    }
  }
  return undefined;
}

test("the engine with an opening: a reply that opens with it is a document from its start; one that does not is free", async () => {
  const model = loadModel(defaultModelDir());
  const session = new Session(model);
  const reply = async (opening: string) => {
    // The document: the opening, then a person (the opening is its own first bytes).
    const grammar: Node = { t: "seq", parts: [text(opening), compileSchema(PERSON)] };
    for await (const ev of session.generate("The person:", {
      maxTokens: 200,
      temperature: 0,
      lazyGrammar: { opening, grammar },
    }))
      if (ev.type === "done") return ev.text;
    throw new Error("no reply");
  };
  const free = await reply("\u0001never");
  const first = model.tokenizer.decode(model.tokenizer.encode(free, false).slice(0, 2)).trimStart();
  assert.ok(first.length > 0);
  const held = await reply(first);
  assert.ok(held.trimStart().startsWith(first), held);
  assert.ok(fitsPerson(firstDocument(held.trimStart().slice(first.length))), held);
  assert.notEqual(held, free, "the document differs from the free reply");
});

test("where the grammar allows few tokens, the output layer computes only their rows: same replies, fewer bytes", async () => {
  const model = loadModel(defaultModelDir());
  const grammar = compileSchema(PERSON);
  const run = async (rows: boolean) => {
    const session = new Session(model);
    if (!rows) Object.defineProperty(session.transformer, "rowLogits", { get: () => false });
    const heads: string[] = [];
    let done: { ids: number[]; text: string } | undefined;
    for await (const ev of session.generate("The person:", { maxTokens: 300, temperature: 0, grammar })) {
      if (ev.type === "token") heads.push(ev.report.head?.method ?? "dense");
      if (ev.type === "done") done = ev;
    }
    return { ids: done!.ids, heads };
  };
  const withRows = await run(true);
  const without = await run(false);
  assert.deepEqual(withRows.ids, without.ids, "greedy replies are the same");
  const grammarSteps = withRows.heads.filter((h) => h === "grammar").length;
  assert.ok(grammarSteps > 5, `the output layer read only the allowed rows at ${grammarSteps} steps`);
  assert.ok(!without.heads.includes("grammar"));
});
