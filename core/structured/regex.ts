// JSON Schema's `pattern` (an ECMAScript regular expression) as a Thompson NFA over characters, run
// as a DFA built lazily (each set of NFA states becomes one numbered state, each move is cached), for
// the byte automaton's strings: a string's frame holds the state its characters reached, a character
// that leads nowhere is refused, and the closing quote needs a matching state. The subset is
// the regular one: literals, `.`, classes and escapes (\d \w \s and their negations, \uXXXX, \xHH),
// groups, alternation, `* + ? {n} {n,} {n,m}` (lazy or not: the same language), `^` and `$` at the
// ends. Lookaround, backreferences and \p{...} are refused (a UsageError naming them). As in JSON
// Schema, a pattern without `^` / `$` may match anywhere in the string.
import { UsageError } from "../loader/errors.js";

/** A character class: sorted, disjoint [lo, hi] code point ranges. */
type Ranges = readonly (readonly [number, number])[];

type Ast =
  | { t: "chars"; ranges: Ranges }
  | { t: "seq"; items: Ast[] }
  | { t: "alt"; options: Ast[] }
  | { t: "repeat"; item: Ast; min: number; max: number };

/** NFA state: a character step (ranges → next), an epsilon split, or the match. */
type State = { ranges: Ranges; next: number } | { split: number[] } | { match: true };

export class Regex {
  /** DFA states, built lazily from NFA state sets: each set once, its id an index here. */
  private readonly sets: (readonly number[])[] = [];
  private readonly ids = new Map<string, number>();
  private readonly moves: Map<number, number>[] = [];
  private readonly start: number;

  private constructor(
    readonly source: string,
    private readonly states: readonly State[],
    startState: number,
  ) {
    this.start = this.intern(this.closure([startState]));
  }

  /**
   * `whole`: the text must match from start to end (a reply held to a regex), as if anchored; else
   * unanchored ends match anything there (JSON Schema's patterns search, they do not match whole).
   */
  static compile(pattern: string, whole = false): Regex {
    const parser = new Parser(pattern);
    let ast = parser.parse();
    const anything: Ast = { t: "repeat", item: { t: "chars", ranges: [[0, 0x10ffff]] }, min: 0, max: Infinity };
    ast = {
      t: "seq",
      items: [
        ...(parser.anchoredStart || whole ? [] : [anything]),
        ast,
        ...(parser.anchoredEnd || whole ? [] : [anything]),
      ],
    };
    const states: State[] = [];
    let start: number;
    try {
      start = build(ast, states, pushState(states, { match: true }));
    } catch (e) {
      if (!(e instanceof TooLarge)) throw e;
      throw new UsageError(`pattern ${JSON.stringify(pattern)}: too large (more than ${MAX_STATES} NFA states)`);
    }
    return new Regex(pattern, states, start);
  }

  /**
   * min to max characters of these code point ranges (a grammar's character class, repeated: one
   * frame for a run of text, where a rule per character would be a frame per character).
   */
  static chars(ranges: readonly (readonly [number, number])[], source: string, min = 1, max = 1): Regex {
    const states: State[] = [{ match: true }];
    const item: Ast = { t: "chars", ranges };
    const one = min === 1 && max === 1;
    const re = new Regex(source, states, build(one ? item : { t: "repeat", item, min, max }, states, 0));
    if (one) re.classRanges = ranges;
    return re;
  }

  /** For one character of a class (Regex.chars with no repetition): its ranges, so that a repetition can extend it. */
  classRanges?: readonly (readonly [number, number])[];

  /** The (DFA) state before any character. */
  initial(): number {
    return this.start;
  }

  /** The state after character `c` (a code point or UTF-16 unit), or -1 when no match can follow. */
  step(state: number, c: number): number {
    const known = this.moves[state].get(c);
    if (known !== undefined) return known;
    const next: number[] = [];
    for (const i of this.sets[state]) {
      const s = this.states[i];
      if ("ranges" in s && inRanges(s.ranges, c)) next.push(s.next);
    }
    const id = next.length === 0 ? -1 : this.intern(this.closure(next));
    this.moves[state].set(c, id);
    return id;
  }

  /**
   * Whether some character in [lo, hi] can follow in `state`: a UTF-8 sequence's first bytes narrow
   * its character to such a range, and a byte is allowed only where one of them can still follow.
   */
  admits(state: number, lo: number, hi: number): boolean {
    for (const i of this.sets[state]) {
      const s = this.states[i];
      if ("ranges" in s && s.ranges.some(([a, b]) => a <= hi && b >= lo)) return true;
    }
    return false;
  }

  matches(state: number): boolean {
    return this.sets[state].some((i) => "match" in this.states[i]);
  }

  private intern(set: readonly number[]): number {
    const key = set.join(",");
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.sets.push(set) - 1;
      this.moves.push(new Map());
      this.ids.set(key, id);
    }
    return id;
  }

  /** The states reachable through epsilon moves, sorted, each once (so equal sets compare equal). */
  private closure(seed: number[]): readonly number[] {
    const seen = new Set<number>();
    const stack = [...seed];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (seen.has(i)) continue;
      seen.add(i);
      const s = this.states[i];
      if ("split" in s) stack.push(...s.split);
    }
    return [...seen].filter((i) => !("split" in this.states[i])).sort((a, b) => a - b);
  }
}

function inRanges(r: Ranges, c: number): boolean {
  for (const [lo, hi] of r) if (c >= lo && c <= hi) return true;
  return false;
}

class TooLarge extends Error {}

function pushState(states: State[], s: State): number {
  if (states.length >= MAX_STATES) throw new TooLarge();
  return states.push(s) - 1;
}

/** States for `ast` leading to `next`; returns its entry state. Built back to front. */
function build(ast: Ast, states: State[], next: number): number {
  switch (ast.t) {
    case "chars":
      return pushState(states, { ranges: ast.ranges, next });
    case "seq":
      return ast.items.reduceRight((to, item) => build(item, states, to), next);
    case "alt":
      return pushState(states, { split: ast.options.map((o) => build(o, states, next)) });
    case "repeat": {
      let to = next;
      if (ast.max === Infinity) {
        // A loop: split → (item → split) | next.
        const loop = pushState(states, { split: [] });
        const body = build(ast.item, states, loop);
        (states[loop] as { split: number[] }).split.push(body, next);
        to = loop;
      } else {
        for (let i = ast.min; i < ast.max; i++) to = pushState(states, { split: [build(ast.item, states, to), next] });
      }
      for (let i = 0; i < ast.min; i++) to = build(ast.item, states, to);
      return to;
    }
  }
}

const MAX_REPEAT = 1000;
/** NFA states a pattern may take (nested counted repeats multiply). */
const MAX_STATES = 20_000;
const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
// ECMAScript's \s: whitespace and line terminators.
const SPACE: Ranges = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
// `.`: anything but line terminators.
const DOT = negate([
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
]);

function normalize(r: (readonly [number, number])[]): Ranges {
  const s = [...r].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [lo, hi] of s) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

function negate(r: Ranges): Ranges {
  const out: [number, number][] = [];
  let from = 0;
  for (const [lo, hi] of normalize([...r])) {
    if (lo > from) out.push([from, lo - 1]);
    from = hi + 1;
  }
  if (from <= 0x10ffff) out.push([from, 0x10ffff]);
  return out;
}

class Parser {
  private i = 0;
  anchoredStart = false;
  anchoredEnd = false;

  constructor(private readonly src: string) {}

  private fail(what: string): never {
    throw new UsageError(`pattern ${JSON.stringify(this.src)}: ${what} (at ${this.i})`);
  }

  parse(): Ast {
    if (this.src.startsWith("^")) {
      this.anchoredStart = true;
      this.i = 1;
    }
    const ast = this.alternation();
    if (this.i < this.src.length) this.fail(`unexpected ${JSON.stringify(this.src[this.i])}`);
    return ast;
  }

  private peek(): string | undefined {
    return this.src[this.i];
  }

  private alternation(): Ast {
    const options = [this.sequence()];
    while (this.peek() === "|") {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { t: "alt", options };
  }

  private sequence(): Ast {
    const items: Ast[] = [];
    for (let c = this.peek(); c !== undefined && c !== "|" && c !== ")"; c = this.peek()) {
      if (c === "$") {
        this.i++;
        if (this.i !== this.src.length) this.fail(`"$" is supported only at the end`);
        this.anchoredEnd = true;
        break;
      }
      if (c === "^") this.fail(`"^" is supported only at the start`);
      items.push(this.quantified(this.atom()));
    }
    return { t: "seq", items };
  }

  private quantified(item: Ast): Ast {
    for (;;) {
      const c = this.peek();
      let min: number, max: number;
      if (c === "*") [min, max] = [0, Infinity];
      else if (c === "+") [min, max] = [1, Infinity];
      else if (c === "?") [min, max] = [0, 1];
      else if (c === "{" && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i))) {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i))!;
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
        if (max < min) this.fail(`{${min},${max}}: the maximum is below the minimum`);
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) this.fail(`repeats above ${MAX_REPEAT}`);
        this.i += m[0].length - 1;
      } else return item;
      this.i++;
      if (this.peek() === "?") this.i++; // lazy: the same language
      item = { t: "repeat", item, min, max };
    }
  }

  private atom(): Ast {
    const c = this.src[this.i++];
    switch (c) {
      case "(": {
        if (this.src.startsWith("?:", this.i)) this.i += 2;
        else if (this.src.startsWith("?<", this.i) && !/^\?<[=!]/.test(this.src.slice(this.i))) {
          const end = this.src.indexOf(">", this.i);
          if (end < 0) this.fail("unterminated group name");
          this.i = end + 1;
        } else if (this.peek() === "?") this.fail("lookaround is not supported");
        const inner = this.alternation();
        if (this.src[this.i++] !== ")") this.fail(`missing ")"`);
        return inner;
      }
      case "[":
        return { t: "chars", ranges: this.charClass() };
      case ".":
        return { t: "chars", ranges: DOT };
      case "\\":
        return { t: "chars", ranges: this.escape(false) };
      case "*":
      case "+":
      case "?":
      case "{":
        return this.fail(`nothing to repeat before ${JSON.stringify(c)}`);
      default: {
        const cp = this.src.codePointAt(this.i - 1)!;
        if (cp > 0xffff) this.i++;
        return { t: "chars", ranges: [[cp, cp]] };
      }
    }
  }

  private charClass(): Ranges {
    const negated = this.peek() === "^";
    if (negated) this.i++;
    const ranges: [number, number][] = [];
    let first = true;
    while (this.peek() !== "]" || first) {
      if (this.peek() === undefined) this.fail(`missing "]"`);
      first = false;
      const lo = this.classAtom();
      if (this.peek() === "-" && this.src[this.i + 1] !== "]" && this.src[this.i + 1] !== undefined) {
        this.i++;
        const hi = this.classAtom();
        if (lo.length !== 1 || hi.length !== 1 || lo[0][0] !== lo[0][1] || hi[0][0] !== hi[0][1])
          this.fail("a range between classes");
        if (hi[0][0] < lo[0][0]) this.fail("a range out of order");
        ranges.push([lo[0][0], hi[0][0]]);
      } else ranges.push(...lo.map(([a, b]): [number, number] => [a, b]));
    }
    this.i++; // "]"
    return negated ? negate(ranges) : normalize(ranges);
  }

  private classAtom(): (readonly [number, number])[] {
    const c = this.src[this.i++];
    if (c === "\\") return [...this.escape(true)];
    const cp = this.src.codePointAt(this.i - 1)!;
    if (cp > 0xffff) this.i++;
    return [[cp, cp]];
  }

  /** After a backslash: a class (\d), a control (\n), a code (\u0041, \x41) or the character itself. */
  private escape(inClass: boolean): Ranges {
    const c = this.src[this.i++];
    const one = (cp: number): Ranges => [[cp, cp]];
    switch (c) {
      case "d":
        return DIGIT;
      case "D":
        return negate(DIGIT);
      case "w":
        return WORD;
      case "W":
        return negate(WORD);
      case "s":
        return SPACE;
      case "S":
        return negate(SPACE);
      case "t":
        return one(9);
      case "n":
        return one(10);
      case "v":
        return one(11);
      case "f":
        return one(12);
      case "r":
        return one(13);
      case "0":
        return one(0);
      case "b":
        if (inClass) return one(8);
        return this.fail("word boundaries (\\b) are not supported");
      case "B":
        return this.fail("word boundaries (\\B) are not supported");
      case "u":
      case "x": {
        const m = (c === "u" ? /^[0-9a-fA-F]{4}/ : /^[0-9a-fA-F]{2}/).exec(this.src.slice(this.i));
        if (!m) this.fail(`\\${c} needs ${c === "u" ? 4 : 2} hex digits`);
        this.i += m![0].length;
        return one(parseInt(m![0], 16));
      }
      case "p":
      case "P":
        return this.fail("Unicode property escapes are not supported");
      case undefined:
        return this.fail("a trailing backslash");
      default:
        if (/[1-9]/.test(c)) this.fail("backreferences are not supported");
        if (/[a-zA-Z]/.test(c)) this.fail(`unknown escape \\${c}`);
        return one(c.codePointAt(0)!);
    }
  }
}
