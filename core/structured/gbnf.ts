// GBNF, llama.cpp's grammar format, as grammar nodes (schema.ts) the byte automaton walks: rules
// `name ::= alternatives`, "literals" (with \n \t \xHH \uHHHH ... escapes), [character classes]
// (ranges, ^ negation), `.` any character, (groups), references to rules, and the repetitions *, +,
// ?, {m}, {m,}, {m,n}. The reply is a derivation of `root`. Rules are raw text: no whitespace is
// implied between their parts (a grammar spells out its own, as llama.cpp's do).
//
// The automaton needs every prefix it accepts to stay completable and every step to consume a
// byte, so grammars it cannot run that way are refused with a UsageError naming the rule: a rule
// that derives no finite text, left recursion (a rule reaching itself before any character,
// including through parts that may be empty: `x ::= x "a"`, or a repetition of something empty).
import { UsageError } from "../loader/errors.js";
import { grammarFixpoint, nullable } from "./automaton.js";
import { Regex } from "./regex.js";
import type { Node } from "./schema.js";

/** Repetition counts a grammar may ask for ({m,n}): each is a copy of the repeated part. */
const MAX_REPEAT = 1000;
const MAX_CODE_POINT = 0x10ffff;
const utf8 = new TextEncoder();
const EMPTY: Node = { t: "literal", texts: [new Uint8Array(0)], raw: true };

type Ranges = [number, number][];

/** The grammar in `text` (GBNF), its `root` rule as a node. */
export function compileGbnf(text: string): Node {
  const rules = new Map<string, Node>();
  const refs = new Map<string, Node>();
  // A rule by name: the same node for every reference, resolved once all rules are read.
  const ref = (name: string): Node => {
    let r = refs.get(name);
    if (!r) {
      let cached: Node | undefined;
      r = {
        t: "ref",
        raw: true,
        get: () => (cached ??= rules.get(name) ?? fail(`rule "${name}" is used but not defined`)),
      };
      refs.set(name, r);
    }
    return r;
  };
  let fresh = 0;
  const fail = (what: string, at?: number): never => {
    throw new UsageError(`grammar: ${what}${at === undefined ? "" : ` (at ${lineCol(text, at)})`}`);
  };

  let i = 0;
  const peek = () => text[i];
  const space = (newlines: boolean) => {
    for (;;) {
      const c = text[i];
      if (c === " " || c === "\t" || ((c === "\n" || c === "\r") && newlines)) i++;
      else if (c === "#") while (i < text.length && text[i] !== "\n") i++;
      else return;
    }
  };
  const name = (): string => {
    const m = /^[A-Za-z0-9_-]+/.exec(text.slice(i));
    if (!m) fail("a rule name was expected", i);
    i += m![0].length;
    return m![0];
  };
  /** One character of a literal or class, escapes decoded; `end` is the delimiter. */
  const char = (end: string): number => {
    if (i >= text.length) fail(`unterminated ${end === '"' ? "literal" : "character class"}`, i);
    const c = text.codePointAt(i)!;
    if (c !== 0x5c) {
      i += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = text[i + 1];
    const simple: Record<string, number> = {
      n: 10,
      r: 13,
      t: 9,
      "\\": 92,
      '"': 34,
      "[": 91,
      "]": 93,
      "-": 45,
      "/": 47,
    };
    if (e in simple) {
      i += 2;
      return simple[e];
    }
    const digits = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    const hex = text.slice(i + 2, i + 2 + digits);
    if (digits === 0 || !/^[0-9A-Fa-f]+$/.test(hex) || hex.length !== digits) fail(`bad escape "\\${e ?? ""}"`, i);
    const cp = parseInt(hex, 16);
    if (cp > MAX_CODE_POINT) fail(`escape \\${e}${hex} is past U+10FFFF`, i);
    i += 2 + digits;
    return cp;
  };

  const alternates = (nested: boolean): Node => {
    const options = [sequence(nested)];
    for (;;) {
      // At the top level a rule's alternatives may continue on the next line, starting with "|".
      const save = i;
      space(true);
      if (peek() !== "|") {
        i = save;
        break;
      }
      i++;
      space(true);
      options.push(sequence(nested));
    }
    return options.length === 1 ? options[0] : { t: "union", options, raw: true };
  };

  const sequence = (nested: boolean): Node => {
    const parts: Node[] = [];
    for (;;) {
      space(nested);
      const c = peek();
      if (c === undefined || c === "|" || c === ")" || c === "\n" || c === "\r") break;
      const start = i;
      let item: Node;
      if (c === '"') {
        i++;
        let s = "";
        while (peek() !== '"') s += String.fromCodePoint(char('"'));
        i++;
        item = s === "" ? EMPTY : { t: "literal", texts: [utf8.encode(s)], raw: true };
      } else if (c === "[") {
        i++;
        const negated = peek() === "^";
        if (negated) i++;
        const ranges: Ranges = [];
        while (peek() !== "]") {
          const lo = char("]");
          let hi = lo;
          if (peek() === "-" && text[i + 1] !== "]") {
            i++;
            hi = char("]");
            if (hi < lo) fail(`the range ${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)} is empty`, start);
          }
          ranges.push([lo, hi]);
        }
        i++;
        const set = negated ? complement(ranges) : ranges;
        if (set.length === 0) fail("a character class that matches no character", start);
        item = { t: "regex", re: Regex.chars(set, text.slice(start, i)) };
      } else if (c === ".") {
        i++;
        item = { t: "regex", re: Regex.chars([[0, MAX_CODE_POINT]], ".") };
      } else if (c === "(") {
        i++;
        space(true);
        item = alternates(true);
        space(true);
        if (peek() !== ")") fail('")" was expected', i);
        i++;
      } else if (/[A-Za-z0-9_-]/.test(c)) {
        const n = name();
        // A name followed by "::=" starts the next rule: this sequence ended at the line before.
        const after = i;
        space(false);
        if (text.startsWith("::=", i)) fail(`"${n} ::=" must start its own line`, start);
        i = after;
        item = ref(n);
      } else {
        fail(`unexpected "${c}"`, i);
      }
      parts.push(repeated(item!, start));
    }
    if (parts.length === 0) return EMPTY;
    return parts.length === 1 ? parts[0] : { t: "seq", parts, raw: true };
  };

  /** `item` with its repetition (*, +, ?, {m}, {m,}, {m,n}) if one follows. */
  const repeated = (item: Node, start: number): Node => {
    const c = peek();
    let min = 1;
    let max = 1;
    if (c === "*" || c === "+" || c === "?") {
      i++;
      [min, max] = c === "*" ? [0, Infinity] : c === "+" ? [1, Infinity] : [0, 1];
    } else if (c === "{") {
      const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(text.slice(i));
      if (!m) fail('a repetition "{m}", "{m,}" or "{m,n}" was expected', i);
      i += m![0].length;
      min = Number(m![1]);
      max = m![2] === undefined ? min : m![3] === "" ? Infinity : Number(m![3]);
      if (max < min) fail(`the repetition {${min},${max}} is empty`, start);
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT))
        fail(`repetitions are limited to ${MAX_REPEAT}`, start);
    } else return item;
    // A repeated character class is one regex (a run of text in one frame).
    if (item.t === "regex" && item.re.classRanges)
      return { t: "regex", re: Regex.chars(item.re.classRanges, text.slice(start, i), min, max) };
    const parts: Node[] = Array.from({ length: min }, () => item);
    if (max === Infinity) {
      // r ::= item r | "" (the automaton keeps its stack flat for the last part of a sequence).
      const name = `${++fresh}*`;
      rules.set(name, { t: "union", options: [{ t: "seq", parts: [item, ref(name)], raw: true }, EMPTY], raw: true });
      parts.push(ref(name));
    } else {
      // (item (item ...)?)? for the optional copies.
      let optional: Node = EMPTY;
      for (let k = min; k < max; k++)
        optional = {
          t: "union",
          options: [optional === EMPTY ? item : { t: "seq", parts: [item, optional], raw: true }, EMPTY],
          raw: true,
        };
      if (optional !== EMPTY) parts.push(optional);
    }
    return parts.length === 0 ? EMPTY : parts.length === 1 ? parts[0] : { t: "seq", parts, raw: true };
  };

  for (;;) {
    space(true);
    if (i >= text.length) break;
    const start = i;
    const n = name();
    space(false);
    if (!text.startsWith("::=", i)) fail(`"::=" was expected after "${n}"`, i);
    i += 3;
    space(true);
    if (rules.has(n)) fail(`rule "${n}" is defined twice`, start);
    rules.set(n, alternates(false));
    space(false);
    if (i < text.length && peek() !== "\n" && peek() !== "\r") fail(`unexpected "${peek()}"`, i);
  }
  if (!rules.has("root")) fail('no "root" rule');
  const root = ref("root");
  check(root, rules, fail);
  return root;
}

/** Refuses what the automaton cannot run: undefined rules, rules with no finite text, left recursion. */
function check(root: Node, rules: Map<string, Node>, fail: (what: string) => never): void {
  const names = new Map<Node, string>();
  for (const [name, node] of rules) names.set(node, name);
  const label = (n: Node) => (n.t === "ref" ? `rule "${names.get(n.get()) ?? "?"}"` : "a part");
  // Productive: derives some finite text. Every node reachable from root is in the map (resolving
  // refs on the way fails on an undefined rule).
  const productive = grammarFixpoint(root, () => true);
  const all = [...productive.keys()];
  const dead = [...new Set(all.filter((n) => n.t === "ref" && !productive.get(n)).map(label))];
  if (dead.length > 0) fail(`${dead.join(", ")} ${dead.length > 1 ? "derive" : "derives"} no finite text`);
  // An option that derives nothing would let the reply start what it can never finish.
  for (const n of all)
    if (n.t === "union" && !n.options.every((o) => productive.get(o)))
      fail("an alternative derives no finite text (a rule that never ends)");
  // Left recursion: a rule reached from itself before any character is read.
  const firstRefs = (n: Node, out: Set<Node>, seenHere = new Set<Node>()): void => {
    if (seenHere.has(n)) return;
    seenHere.add(n);
    if (n.t === "ref") out.add(n.get());
    else if (n.t === "union") n.options.forEach((o) => firstRefs(o, out, seenHere));
    else if (n.t === "seq")
      for (const p of n.parts) {
        firstRefs(p, out, seenHere);
        if (!nullable(p)) break;
      }
  };
  for (const [name, node] of rules) {
    if (!productive.has(node)) continue; // not reachable from root
    const reached = new Set<Node>();
    const frontier = [node];
    while (frontier.length > 0) {
      const next = new Set<Node>();
      firstRefs(frontier.pop()!, next);
      for (const r of next) {
        if (r === node)
          fail(
            name.endsWith("*")
              ? "a repetition of something that may be empty"
              : `rule "${name}" is left-recursive (it reaches itself before any character)`,
          );
        if (!reached.has(r)) {
          reached.add(r);
          frontier.push(r);
        }
      }
    }
  }
}

/** The code points not in `ranges`. */
function complement(ranges: Ranges): Ranges {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

function lineCol(text: string, at: number): string {
  const before = text.slice(0, at).split("\n");
  return `line ${before.length}, column ${before[before.length - 1].length + 1}`;
}
