// A byte-level recognizer for the JSON a grammar (schema.ts) allows, one byte at a time: a pushdown
// automaton whose stacks are immutable linked frames, so trying a token's bytes from the current
// state costs a few small objects and never disturbs it. Alternatives (anyOf, type lists) run side by
// side as several stacks (an NFA over stacks); a byte that no stack takes is not allowed.
//
// Every prefix it accepts can still be completed into a valid document (required properties cannot
// be skipped, strings cannot end before minLength, ...), which is what lets a sampler mask tokens
// step by step without ever painting itself into a corner. Whitespace between tokens is allowed but
// bounded (moreWs), and numbers are bounded in length, so a model cannot stall forever inside the
// grammar on filler.
import type { Node, Prop } from "./schema.js";
import type { Regex } from "./regex.js";
import { MAX_FRAC_DIGITS, MAX_INT_DIGITS, parseDecimal, reachable, within, type Bounds } from "./bounds.js";

/** Indentation bytes (spaces, tabs) allowed after a newline between structural tokens. */
export const MAX_INDENT = 20;
/** Digits allowed in a number's exponent (its integer part and fraction: bounds.ts). */
const MAX_EXP_DIGITS = 3;
/**
 * Stacks kept at once: alternatives that overlap could otherwise multiply. Each kept stack can still
 * complete the document, so dropping some only narrows what may follow.
 */
const MAX_STACKS = 64;

type ObjState = "open" | "key" | "colon" | "val" | "after" | "comma";
type ArrState = "open" | "val" | "after" | "comma";
// Number states: before the first digit (no sign; passing only), after '-', after a leading 0, integer
// digits, after '.', fraction digits, after e, after the exponent's sign, exponent digits.
type NumState = "sign" | "minus" | "zero" | "int" | "dot" | "frac" | "e" | "esign" | "exp";

type Frame =
  | { readonly k: "root"; readonly done: boolean }
  | { readonly k: "value"; readonly node: Node; readonly ws: number }
  | {
      readonly k: "obj";
      readonly node: Extract<Node, { t: "object" }>;
      readonly st: ObjState;
      /** Index of the first property that may come next. */
      readonly next: number;
      readonly ws: number;
      /** While matching a declared key: the properties still possible and the bytes matched. */
      readonly cands: readonly number[];
      readonly pos: number;
      /** The property whose value is being read (declared properties). */
      readonly cur: number;
    }
  | {
      readonly k: "arr";
      readonly node: Extract<Node, { t: "array" }>;
      readonly st: ArrState;
      readonly count: number;
      readonly ws: number;
    }
  /**
   * A string: chars so far (code points; an escape is one), escape state (0 none, 1 after \, 2..5 in
   * \uXXXX), UTF-8 continuation bytes still due (u) and the range the next one must be in (lo..hi),
   * the character being decoded (cp), and with a pattern, its (DFA) state so far.
   */
  | {
      readonly k: "str";
      readonly min: number;
      readonly max: number;
      readonly n: number;
      readonly esc: number;
      readonly u: number;
      readonly lo: number;
      readonly hi: number;
      readonly cp: number;
      readonly re: Regex | null;
      readonly dfa: number;
    }
  /**
   * A number: its state, its text so far (sign, integer and fraction digits) and exponent digits, and
   * the bounds (minimum, maximum, ...) every way of finishing it must still be able to meet.
   */
  | {
      readonly k: "num";
      readonly integer: boolean;
      readonly bounds: Bounds | null;
      readonly st: NumState;
      readonly neg: boolean;
      readonly int: string;
      readonly frac: string;
      readonly exp: number;
    }
  | { readonly k: "lit"; readonly texts: readonly Uint8Array[]; readonly pos: number }
  /** Raw text matched by a regex: its DFA state, and a UTF-8 character being decoded (as in "str"). */
  | {
      readonly k: "rx";
      readonly re: Regex;
      readonly dfa: number;
      readonly u: number;
      readonly lo: number;
      readonly hi: number;
      readonly cp: number;
    }
  | { readonly k: "seq"; readonly parts: readonly Node[]; readonly i: number };

export interface Stack {
  readonly f: Frame;
  readonly up: Stack | null;
}

const on = (up: Stack | null, f: Frame): Stack => ({ f, up });

/** JSON's whitespace bytes. */
export const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Whitespace between structural tokens: one space, or a newline and up to MAX_INDENT spaces or tabs
 * of indentation (JSON.stringify's and Python's json.dumps' layouts; llama.cpp's grammars allow about
 * as much). `ws` encodes the run so far: 0 none, 1 a space, 2 + i a newline and i indentation
 * bytes. Returns the run with byte b, or -1 where b may not extend it.
 */
function moreWs(ws: number, b: number): number {
  if (ws === 0) return b === 0x20 ? 1 : b === 0x0a ? 2 : -1;
  if (ws >= 2 && (b === 0x20 || b === 0x09) && ws - 2 < MAX_INDENT) return ws + 1;
  return -1;
}

/** For bytes 0x80..0xff: [continuation bytes due, range of the first] when the byte leads a sequence. */
const UTF8_LEADS: (readonly [number, number, number] | undefined)[] = Array.from({ length: 128 }, (_, i) => {
  const b = 0x80 + i;
  if (b >= 0xc2 && b <= 0xdf) return [1, 0x80, 0xbf];
  if (b === 0xe0) return [2, 0xa0, 0xbf];
  if (b === 0xed) return [2, 0x80, 0x9f];
  if (b >= 0xe1 && b <= 0xef) return [2, 0x80, 0xbf];
  if (b === 0xf0) return [3, 0x90, 0xbf];
  if (b >= 0xf1 && b <= 0xf3) return [3, 0x80, 0xbf];
  if (b === 0xf4) return [3, 0x80, 0x8f];
  return undefined;
});

/**
 * The code points a UTF-8 sequence can still become: `cp` its bits so far, `u` continuation bytes
 * due, the next one in [lo, hi].
 */
function pendingChars(cp: number, u: number, lo: number, hi: number): [number, number] {
  const rest = 6 * (u - 1);
  return [((cp << 6) | (lo & 0x3f)) << rest, ((((cp << 6) | (hi & 0x3f)) << rest) | ((1 << rest) - 1)) >>> 0];
}

/**
 * The length of the well-formed UTF-8 character at bytes[at] (1 for ASCII), or 0 where none starts
 * there whole (a continuation byte, an invalid lead, or a sequence the bytes cut short).
 */
export function utf8CharLength(bytes: Uint8Array, at: number): number {
  const b = bytes[at];
  if (b < 0x80) return 1;
  const lead = UTF8_LEADS[b - 0x80];
  if (!lead || at + lead[0] >= bytes.length) return 0;
  if (bytes[at + 1] < lead[1] || bytes[at + 1] > lead[2]) return 0;
  for (let i = 2; i <= lead[0]; i++) if (bytes[at + i] < 0x80 || bytes[at + i] > 0xbf) return 0;
  return lead[0] + 1;
}

const PLAIN_STRING: Extract<Frame, { k: "str" }> = {
  k: "str",
  min: 0,
  max: Infinity,
  n: 0,
  esc: 0,
  u: 0,
  lo: 0,
  hi: 0,
  cp: 0,
  re: null,
  dfa: -1,
};
const ANY_MAP: Extract<Node, { t: "object" }> = { t: "object", props: [], extra: { t: "any" } };
const ANY_LIST: Extract<Node, { t: "array" }> = { t: "array", items: { t: "any" }, min: 0, max: Infinity };
const KEYWORDS = ["true", "false", "null"].map((s) => new TextEncoder().encode(s));

/** A whitespace run that cannot grow (moreWs): no whitespace before the document, as OpenAI's replies start. */
const NO_WS = 2 + MAX_INDENT;

/**
 * The stacks a document starts from: the root value, its first byte the reply's first (or, with
 * `leadingWhitespace`, after whitespace as between tokens: a document that follows other text).
 */
export function initial(root: Node, leadingWhitespace = false): Stack[] {
  return [on(on(null, { k: "root", done: false }), { k: "value", node: root, ws: leadingWhitespace ? 0 : NO_WS })];
}

/** The stacks after `b`; empty when no stack takes it. */
export function feed(stacks: readonly Stack[], b: number): Stack[] {
  const out: Stack[] = [];
  for (const s of stacks) {
    step(s, b, out);
    if (out.length > MAX_STACKS) break;
  }
  return out;
}

/** The stacks after bytes[from..to), or null as soon as one is not allowed. */
export function feedAll(stacks: readonly Stack[], bytes: Uint8Array, from = 0, to = bytes.length): Stack[] | null {
  let cur = stacks as Stack[];
  for (let i = from; i < to; i++) {
    cur = feed(cur, bytes[i]);
    if (cur.length === 0) return null;
  }
  return cur;
}

/** Whether the document may end here (the root value is complete). */
export function accepting(stacks: readonly Stack[]): boolean {
  return stacks.some(canEnd);
}

/** Whether the document must end here: complete, and no byte can follow. */
export function finished(stacks: readonly Stack[]): boolean {
  return stacks.length > 0 && stacks.every((s) => s.f.k === "root" && s.f.done);
}

/**
 * Whether every stack is inside a string past its minLength, with no maxLength, between characters
 * and with no escape pending: then text without `"`, `\`, control characters or a partial UTF-8
 * sequence leaves the stacks exactly as they are (a fast path for masking vocabularies, where most
 * tokens are such text).
 */
export function inFreeString(stacks: readonly Stack[]): boolean {
  return stacks.every(
    (s) => s.f.k === "str" && s.f.esc === 0 && s.f.u === 0 && s.f.max === Infinity && s.f.n >= s.f.min && !s.f.re,
  );
}

/** What a string's text may still take, when the only stack is inside one between characters. */
export interface StringState {
  readonly n: number;
  readonly max: number;
  readonly re: Regex | null;
  readonly dfa: number;
}

/**
 * Raw text under a regex (a whole-reply regex, a grammar's character class) between characters, when
 * it is the only stack: its pattern, DFA state, and whether it is the whole reply (nothing after it).
 */
export function regexState(stacks: readonly Stack[]): { re: Regex; dfa: number; whole: boolean } | undefined {
  if (stacks.length !== 1) return undefined;
  const s = stacks[0];
  const whole = s.up?.f.k === "root";
  if (s.f.k === "rx") return s.f.u === 0 ? { re: s.f.re, dfa: s.f.dfa, whole } : undefined;
  if (s.f.k !== "value") return undefined;
  // A regex not started yet (a reply's first token): the same, from its first state.
  let node = s.f.node;
  while (node.t === "ref") node = node.get();
  return node.t === "regex" ? { re: node.re, dfa: node.re.initial(), whole } : undefined;
}

export function stringState(stacks: readonly Stack[]): StringState | undefined {
  if (stacks.length !== 1) return undefined;
  const f = stacks[0].f;
  return f.k === "str" && f.esc === 0 && f.u === 0 ? f : undefined;
}

/**
 * The stacks of stringState's string after more plain text: `n` characters in all, the pattern at
 * `dfa` (what the text's characters, fed one by one, would have left).
 */
export function withText(stacks: readonly Stack[], n: number, dfa: number): Stack[] {
  const s = stacks[0];
  if (stacks.length !== 1 || s.f.k !== "str") throw new Error("withText needs stringState's one string");
  return [on(s.up, { ...s.f, n, dfa })];
}

function canEnd(s: Stack): boolean {
  const f = s.f;
  if (f.k === "root") return f.done;
  if (f.k === "num" && numberEnds(f)) return canEnd(afterValue(s.up!));
  if (f.k === "lit" && f.texts.some((t) => t.length === f.pos)) return canEnd(afterValue(s.up!));
  if (f.k === "rx" && f.u === 0 && f.re.matches(f.dfa)) return canEnd(afterValue(s.up!));
  if (f.k === "value" && nullable(f.node)) return canEnd(afterValue(s.up!));
  return false;
}

const numComplete = (st: NumState) => st === "zero" || st === "int" || st === "frac" || st === "exp";

/** The stack once the value on top of `up` has ended. */
function afterValue(up: Stack): Stack {
  const f = up.f;
  switch (f.k) {
    case "root":
      return on(up.up, { k: "root", done: true });
    case "obj":
      // A map's key string ended: the colon comes next; a value ended: a comma or the brace.
      return on(up.up, { ...f, st: f.st === "key" ? "colon" : "after", ws: 0 });
    case "arr":
      return on(up.up, { ...f, st: "after", count: f.count + 1, ws: 0 });
    case "seq": {
      if (f.i + 1 >= f.parts.length) return afterValue(up.up!);
      // The last part replaces the sequence's frame (nothing is left to do after it), so a grammar's
      // repetition (r ::= x r | "") keeps a flat stack however often it repeats.
      if (f.i + 2 === f.parts.length) return on(up.up, { k: "value", node: f.parts[f.i + 1], ws: 0 });
      const seq = on(up.up, { ...f, i: f.i + 1 });
      return on(seq, { k: "value", node: f.parts[f.i + 1], ws: 0 });
    }
    default:
      throw new Error(`a ${f.k} frame holds no values`);
  }
}

function step(s: Stack, b: number, out: Stack[]): void {
  const f = s.f;
  switch (f.k) {
    case "root":
      return; // the document is complete: nothing may follow
    case "value":
      return startValue(s.up!, f.node, f.ws, b, out);
    case "str":
      return stepString(s, f, b, out);
    case "num":
      return stepNumber(s, f, b, out);
    case "lit":
      return stepLiteral(s, f, b, out);
    case "rx":
      return stepRegex(s.up!, f, b, out);
    case "obj":
      return stepObject(s, f, b, out);
    case "arr":
      return stepArray(s, f, b, out);
    case "seq":
      throw new Error("a seq frame is never on top");
  }
}

/** A value of `node` beginning with byte b (or whitespace before it), on top of `up`. */
function startValue(up: Stack, node: Node, ws: number, b: number, out: Stack[]): void {
  if (node.t === "ref") return startValue(up, node.get(), ws, b, out);
  if (isWs(b) && takesJsonWs(node)) {
    const w = moreWs(ws, b);
    if (w >= 0) out.push(on(up, { k: "value", node, ws: w }));
    return;
  }
  switch (node.t) {
    case "union":
      for (const o of node.options) startValue(up, o, ws, b, out);
      return;
    case "seq":
      if (node.parts.length === 1) return startValue(up, node.parts[0], ws, b, out);
      return startValue(on(up, { k: "seq", parts: node.parts, i: 0 }), node.parts[0], ws, b, out);
    case "any":
      if (b === 0x7b) out.push(on(up, objFrame(ANY_MAP)));
      else if (b === 0x5b) out.push(on(up, { k: "arr", node: ANY_LIST, st: "open", count: 0, ws: 0 }));
      else if (b === QUOTE) out.push(on(up, PLAIN_STRING));
      else if (b === 0x2d || isDigit(b)) startNumber(up, false, null, b, out);
      else startLiteral(up, KEYWORDS, b, out);
      return;
    case "object":
      if (b === 0x7b) out.push(on(up, objFrame(node)));
      return;
    case "array":
      if (b === 0x5b) out.push(on(up, { k: "arr", node, st: "open", count: 0, ws: 0 }));
      return;
    case "string":
      if (b === QUOTE) {
        const re = node.pattern ?? null;
        out.push(on(up, { ...PLAIN_STRING, min: node.min, max: node.max, re, dfa: re ? re.initial() : -1 }));
      }
      return;
    case "number":
      if (b === 0x2d || isDigit(b)) startNumber(up, node.integer, node.bounds ?? null, b, out);
      return;
    case "literal":
      startLiteral(up, node.texts, b, out);
      // An empty text (a grammar's "" or an optional part left out): the byte belongs to what follows.
      if (node.texts.some((t) => t.length === 0)) step(afterValue(up), b, out);
      return;
    case "regex":
      return stepRegex(up, { k: "rx", re: node.re, dfa: node.re.initial(), u: 0, lo: 0, hi: 0, cp: 0 }, b, out);
  }
}

/** Whether JSON whitespace may come before a value of `node` (not in raw text: literals, regexes, grammar rules). */
function takesJsonWs(node: Node): boolean {
  if (node.t === "literal") return !node.raw;
  if (node.t === "regex") return false;
  if (node.t === "seq" || node.t === "union" || node.t === "ref") return !node.raw;
  return true;
}

/**
 * A least fixpoint over the sequences, unions and rules reachable from `root` (rules may refer to
 * each other): a sequence has the property when all its parts do, a union when one option does, a
 * rule when its body does, any other node when `leaf` says so. `known`: nodes already settled, not
 * visited again. Returns every node visited, with its value.
 */
export function grammarFixpoint(
  root: Node,
  leaf: (n: Node) => boolean,
  known: (n: Node) => boolean | undefined = () => undefined,
): Map<Node, boolean> {
  const value = new Map<Node, boolean>();
  const visit = (n: Node): void => {
    if (value.has(n) || known(n) !== undefined) return;
    value.set(n, false);
    if (n.t === "seq") n.parts.forEach(visit);
    else if (n.t === "union") n.options.forEach(visit);
    else if (n.t === "ref") visit(n.get());
  };
  visit(root);
  const of = (n: Node) => value.get(n) ?? known(n)!;
  for (let changed = true; changed;) {
    changed = false;
    for (const [n, v] of value) {
      if (v) continue;
      const now =
        n.t === "seq"
          ? n.parts.every(of)
          : n.t === "union"
            ? n.options.some(of)
            : n.t === "ref"
              ? of(n.get())
              : leaf(n);
      if (now) {
        value.set(n, true);
        changed = true;
      }
    }
  }
  return value;
}

const nullables = new WeakMap<Node, boolean>();

/** Whether `node` matches the empty text (a grammar's optional parts; never a JSON value). */
export function nullable(node: Node): boolean {
  const known = nullables.get(node);
  if (known !== undefined) return known;
  const empty = (n: Node) =>
    n.t === "literal" ? n.texts.some((t) => t.length === 0) : n.t === "regex" && n.re.matches(n.re.initial());
  const value = grammarFixpoint(node, empty, (n) => nullables.get(n));
  for (const [n, v] of value) nullables.set(n, v);
  return value.get(node)!;
}

/**
 * Raw text under a regex (frame `f` on top of `up`), byte by byte: well-formed UTF-8 decoded to characters, each of which must
 * keep a match possible. Where the text matches, the value may end: before the byte, the text is
 * complete, and the byte belongs to what follows (nothing, at the top: the reply ends).
 */
function stepRegex(up: Stack, f: Extract<Frame, { k: "rx" }>, b: number, out: Stack[]): void {
  const char = (c: number, g: Extract<Frame, { k: "rx" }>) => {
    const dfa = f.re.step(g.dfa, c);
    if (dfa < 0) return;
    // A match that no character can extend is complete now (as a literal is).
    if (f.re.matches(dfa) && !f.re.admits(dfa, 0, 0x10ffff)) out.push(afterValue(up));
    else out.push(on(up, { ...g, dfa }));
  };
  // Where the text so far matches (before any character, too: a grammar's [a-z]*), the byte may
  // belong to what follows.
  if (f.u === 0 && f.re.matches(f.dfa)) step(afterValue(up), b, out);
  // A byte that starts or continues a character: allowed where some character it may become can follow.
  const partial = (g: Extract<Frame, { k: "rx" }>) => {
    if (f.re.admits(g.dfa, ...pendingChars(g.cp, g.u, g.lo, g.hi))) out.push(on(up, g));
  };
  if (f.u > 0) {
    if (b < f.lo || b > f.hi) return;
    const cp = f.cp * 64 + (b & 0x3f);
    if (f.u > 1) partial({ ...f, u: f.u - 1, lo: 0x80, hi: 0xbf, cp });
    else char(cp, { ...f, u: 0, cp: 0 });
    return;
  }
  if (b < 0x80) return char(b, f);
  const lead = UTF8_LEADS[b - 0x80];
  if (lead) partial({ ...f, u: lead[0], lo: lead[1], hi: lead[2], cp: b & (0x3f >> lead[0]) });
}

function objFrame(node: Extract<Node, { t: "object" }>): Frame {
  return { k: "obj", node, st: "open", next: 0, ws: 0, cands: [], pos: 0, cur: -1 };
}

// ---- strings, numbers, literals --------------------------------------------------------------

/** What a one-character JSON escape (after the backslash) writes, by its letter. */
const ESCAPED: Record<number, number> = {
  0x22: 0x22,
  0x5c: 0x5c,
  0x2f: 0x2f,
  0x62: 8,
  0x66: 12,
  0x6e: 10,
  0x72: 13,
  0x74: 9,
};

function stepString(s: Stack, f: Extract<Frame, { k: "str" }>, b: number, out: Stack[]): void {
  // A character the string's text gains (decoded): its pattern must still be able to match.
  const char = (g: Extract<Frame, { k: "str" }>, c: number): void => {
    if (!g.re) return void out.push(on(s.up, g));
    const dfa = g.re.step(g.dfa, c);
    if (dfa >= 0) out.push(on(s.up, { ...g, dfa }));
  };
  // A byte that starts or continues a character: with a pattern, some character it may become must fit.
  const partial = (g: Extract<Frame, { k: "str" }>): void => {
    if (!g.re || g.re.admits(g.dfa, ...pendingChars(g.cp, g.u, g.lo, g.hi))) out.push(on(s.up, g));
  };
  if (f.esc === 1) {
    if (b === 0x75) out.push(on(s.up, { ...f, esc: 2, cp: 0 }));
    else if (ESCAPED[b] !== undefined) char({ ...f, esc: 0 }, ESCAPED[b]);
    return;
  }
  if (f.esc >= 2) {
    if (!isHex(b)) return;
    const cp = f.cp * 16 + parseInt(String.fromCharCode(b), 16);
    if (f.esc < 5) out.push(on(s.up, { ...f, esc: f.esc + 1, cp }));
    else char({ ...f, esc: 0, cp: 0 }, cp); // \uXXXX: one UTF-16 unit, as ECMAScript patterns see it
    return;
  }
  if (f.u > 0) {
    // Inside a UTF-8 sequence: only its continuation bytes (the character was counted at its lead).
    if (b < f.lo || b > f.hi) return;
    const cp = f.cp * 64 + (b & 0x3f);
    if (f.u > 1) partial({ ...f, u: f.u - 1, lo: 0x80, hi: 0xbf, cp });
    else char({ ...f, u: 0, lo: 0x80, hi: 0xbf, cp: 0 }, cp);
    return;
  }
  if (b === QUOTE) {
    if (f.n >= f.min && (!f.re || f.re.matches(f.dfa))) out.push(afterValue(s.up!));
    return;
  }
  if (b < 0x20) return; // control characters must be escaped
  if (f.n >= f.max) return;
  if (b >= 0x80) {
    // A lead byte of well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
    const lead = UTF8_LEADS[b - 0x80];
    if (lead) partial({ ...f, n: f.n + 1, u: lead[0], lo: lead[1], hi: lead[2], cp: b & (0x3f >> lead[0]) });
    return;
  }
  // The escape counts as the character it writes. Past minLength, with no maxLength or pattern, the
  // count no longer matters and stays put: plain text then leaves the stack as it is (no allocation).
  if (b === BACKSLASH) out.push(on(s.up, { ...f, n: f.n + 1, esc: 1 }));
  else if (f.n >= f.min && f.max === Infinity && !f.re) out.push(s);
  else char({ ...f, n: f.n + 1 }, b);
}

function startNumber(up: Stack, integer: boolean, bounds: Bounds | null, b: number, out: Stack[]): void {
  const num: Extract<Frame, { k: "num" }> = {
    k: "num",
    integer,
    bounds,
    st: "minus",
    neg: false,
    int: "",
    frac: "",
    exp: 0,
  };
  if (b === 0x2d) pushNumber(up, { ...num, neg: true }, out);
  else stepNumber(on(up, num), { ...num, st: "sign" }, b, out);
}

/** The number frame, where its bounds can still be met by some way of finishing it. */
function pushNumber(up: Stack | null, f: Extract<Frame, { k: "num" }>, out: Stack[]): void {
  if (f.bounds) {
    const dot = f.st === "dot" || f.st === "frac";
    const moreInt = dot ? 0 : MAX_INT_DIGITS - f.int.length;
    const moreFrac = dot ? MAX_FRAC_DIGITS - f.frac.length : MAX_FRAC_DIGITS;
    if (!reachable(f.bounds, f.integer, f.neg, f.int, dot, f.frac, moreInt, moreFrac)) return;
  }
  out.push(on(up, f));
}

function stepNumber(s: Stack, f: Extract<Frame, { k: "num" }>, b: number, out: Stack[]): void {
  const digit = isDigit(b);
  const d = String.fromCharCode(b);
  // Exponents only without bounds (an exponent reaches any magnitude; bounded numbers are written out).
  const fraction = !f.integer;
  const exponent = fraction && !f.bounds;
  switch (f.st) {
    case "sign": // (the first byte, after no minus) and "minus": the first digit
    case "minus":
      if (digit) return pushNumber(s.up, { ...f, st: b === 0x30 ? "zero" : "int", int: d }, out);
      return;
    case "zero":
    case "int":
      if (digit && f.st === "int")
        return f.int.length < MAX_INT_DIGITS ? pushNumber(s.up, { ...f, int: f.int + d }, out) : undefined;
      if (b === 0x2e && fraction) return pushNumber(s.up, { ...f, st: "dot" }, out);
      if ((b === 0x65 || b === 0x45) && exponent) return void out.push(on(s.up, { ...f, st: "e" }));
      break;
    case "dot":
      if (digit) return pushNumber(s.up, { ...f, st: "frac", frac: d }, out);
      return;
    case "frac":
      if (digit) return f.frac.length < MAX_FRAC_DIGITS ? pushNumber(s.up, { ...f, frac: f.frac + d }, out) : undefined;
      if ((b === 0x65 || b === 0x45) && exponent) return void out.push(on(s.up, { ...f, st: "e" }));
      break;
    case "e":
      if (b === 0x2b || b === 0x2d) return void out.push(on(s.up, { ...f, st: "esign" }));
      if (digit) return void out.push(on(s.up, { ...f, st: "exp", exp: 1 }));
      return;
    case "esign":
      if (digit) out.push(on(s.up, { ...f, st: "exp", exp: 1 }));
      return;
    case "exp":
      if (digit) return f.exp < MAX_EXP_DIGITS ? void out.push(on(s.up, { ...f, exp: f.exp + 1 })) : undefined;
      break;
  }
  // A complete number ends at the first byte that cannot continue it; that byte belongs to what follows.
  if (digit || !numberEnds(f)) return; // a digit past the limits (or after a leading 0) ends nothing
  step(afterValue(s.up!), b, out);
}

/** Whether the number may end as it stands: a complete form, inside its bounds. */
function numberEnds(f: Extract<Frame, { k: "num" }>): boolean {
  if (!numComplete(f.st)) return false;
  if (!f.bounds) return true;
  const text = `${f.neg ? "-" : ""}${f.int}${f.frac ? `.${f.frac}` : ""}`;
  return within(parseDecimal(text)!, f.bounds);
}

function startLiteral(up: Stack, texts: readonly Uint8Array[], b: number, out: Stack[]): void {
  stepLiteral(on(up, { k: "lit", texts, pos: 0 }), { k: "lit", texts, pos: 0 }, b, out);
}

function stepLiteral(s: Stack, f: Extract<Frame, { k: "lit" }>, b: number, out: Stack[]): void {
  const next = f.texts.filter((t) => t.length > f.pos && t[f.pos] === b);
  if (next.length > 0) {
    // Complete as soon as no longer text is still possible ("true"); "1" of enum [1, 12] waits.
    if (next.every((t) => t.length === f.pos + 1)) out.push(afterValue(s.up!));
    else out.push(on(s.up, { k: "lit", texts: next, pos: f.pos + 1 }));
    return;
  }
  // A literal that is complete here (only numbers can be, beside longer ones) ends at this byte.
  if (f.pos > 0 && f.texts.some((t) => t.length === f.pos)) step(afterValue(s.up!), b, out);
}

// ---- objects and arrays ----------------------------------------------------------------------

/** Declared properties that may come next from index `from`: up to and including the first required one. */
function candidates(props: readonly Prop[], from: number): number[] {
  const list: number[] = [];
  for (let j = from; j < props.length; j++) {
    list.push(j);
    if (props[j].required) break;
  }
  return list;
}

const mayClose = (props: readonly Prop[], from: number) => props.slice(from).every((p) => !p.required);

function stepObject(s: Stack, f: Extract<Frame, { k: "obj" }>, b: number, out: Stack[]): void {
  const props = f.node.props;
  const map = props.length === 0;
  const ws = (): void => {
    const w = moreWs(f.ws, b);
    if (w >= 0) out.push(on(s.up, { ...f, ws: w }));
  };
  const close = (): void => {
    out.push(afterValue(s.up!));
  };
  const openKey = () => {
    if (map) {
      out.push(on(on(s.up, { ...f, st: "key", ws: 0 }), PLAIN_STRING));
      return;
    }
    const cands = candidates(props, f.next);
    if (cands.length > 0) out.push(on(s.up, { ...f, st: "key", cands, pos: 0, ws: 0 }));
  };
  switch (f.st) {
    case "open":
      if (isWs(b)) return ws();
      if (b === QUOTE) return openKey();
      if (b === 0x7d && (map || mayClose(props, f.next))) return close();
      return;
    case "key": {
      // A declared key, byte by byte against the candidates' spellings (a map's key is a str frame).
      // A quote either continues a key that holds an escaped one or closes a key matched whole.
      const cands = f.cands.filter((c) => props[c].key.length > f.pos && props[c].key[f.pos] === b);
      if (cands.length > 0) out.push(on(s.up, { ...f, cands, pos: f.pos + 1 }));
      if (b === QUOTE) {
        const j = f.cands.find((c) => props[c].key.length === f.pos);
        if (j !== undefined) out.push(on(s.up, { ...f, st: "colon", cur: j, next: j + 1, cands: [], ws: 0 }));
      }
      return;
    }
    case "colon":
      if (isWs(b)) return ws();
      if (b === 0x3a) {
        const node = map ? f.node.extra! : props[f.cur].node;
        out.push(on(on(s.up, { ...f, st: "val", ws: 0 }), { k: "value", node, ws: 0 }));
      }
      return;
    case "val":
      throw new Error("an object frame waiting for a value is never on top");
    case "after":
      if (isWs(b)) return ws();
      if (b === 0x2c && (map || candidates(props, f.next).length > 0)) out.push(on(s.up, { ...f, st: "comma", ws: 0 }));
      else if (b === 0x7d && (map || mayClose(props, f.next))) close();
      return;
    case "comma":
      if (isWs(b)) return ws();
      if (b === QUOTE) openKey();
      return;
  }
}

function stepArray(s: Stack, f: Extract<Frame, { k: "arr" }>, b: number, out: Stack[]): void {
  const { min, max } = f.node;
  // Item i: the tuple's i-th schema (prefixItems), then `items` for the rest.
  const items = f.node.prefix?.[f.count] ?? f.node.items;
  if (isWs(b) && f.st !== "val") {
    const w = moreWs(f.ws, b);
    if (w >= 0) out.push(on(s.up, { ...f, ws: w }));
    return;
  }
  switch (f.st) {
    case "open":
      if (b === 0x5d) {
        if (min === 0) out.push(afterValue(s.up!));
        return;
      }
      if (max > 0) startValue(on(s.up, { ...f, st: "val", ws: 0 }), items, 0, b, out);
      return;
    case "after":
      if (b === 0x2c && f.count < max) out.push(on(s.up, { ...f, st: "comma", ws: 0 }));
      else if (b === 0x5d && f.count >= min) out.push(afterValue(s.up!));
      return;
    case "comma":
      startValue(on(s.up, { ...f, st: "val", ws: 0 }), items, 0, b, out);
      return;
    case "val":
      throw new Error("an array frame waiting for a value is never on top");
  }
}
