// Structured output: which tokens a grammar allows next, as a mask over the vocabulary's logits. The
// session masks every step's logits before sampling, so whatever the sampler draws (greedy, top-p,
// any temperature) continues a document the grammar accepts, and it advances the grammar by the
// token it chose. Sampling from masked logits is sampling from the model's distribution restricted
// to valid tokens, renormalized: the reply is the model's own, only kept inside the grammar.
import {
  accepting,
  feed,
  feedAll,
  finished,
  inFreeString,
  initial,
  isWs,
  regexState,
  stringState,
  utf8CharLength,
  withText,
  type Stack,
  type StringState,
} from "./automaton.js";
import type { Regex } from "./regex.js";
import type { Node } from "./schema.js";

/**
 * How many of t's first bytes are whole characters of string text: ASCII other than `"`, `\` and
 * controls, and complete, well-formed UTF-8 sequences (a partial one at the end is not counted).
 */
function plainLength(t: Uint8Array): number {
  let p = 0;
  while (p < t.length) {
    const b = t[p];
    if (b < 0x20 || b === 0x22 || b === 0x5c) return p;
    const len = utf8CharLength(t, p);
    if (len === 0) return p;
    p += len;
  }
  return p;
}

/**
 * A tokenizer's vocabulary as bytes, with what masking precomputes once per model. The bytes sit in
 * one buffer (token id's at data[start[id] .. start[id + 1])), not 100K+ small arrays for the
 * garbage collector to walk.
 */
export class TokenVocabulary {
  readonly size: number;
  readonly data: Uint8Array;
  readonly start: Int32Array;
  /** Tokens that write no bytes (special tokens, which decoding drops) and end-of-sequence ids. */
  readonly empty: Uint8Array;
  readonly emptyIds: Int32Array;
  /**
   * Tokens that are not whole characters of string text (plainLength < length), and for each the
   * index in `tails` of what follows its plain start: inside a string only these depend on the
   * state, and through a few distinct tails (`"`, `",`, `\n`, ...).
   */
  readonly mixed: Int32Array;
  readonly tailOf: Int32Array;
  /** Where each token's plain text ends (an index into data; start[id + 1] for plain tokens). */
  readonly plainEnd: Int32Array;
  readonly tails: readonly Uint8Array[];
  /**
   * Token ids by their first two bytes (index b1 * 257 + b2; b2 = 256 for one-byte tokens), so that a
   * mask rules out a whole group with one automaton step and never visits its tokens.
   */
  readonly groups: (Int32Array | undefined)[];

  constructor(
    /** Each id's bytes in the decoded text; null for special tokens. */
    bytes: readonly (Uint8Array | null)[],
    /** End-of-sequence ids: allowed exactly where the document may end. */
    readonly eos: ReadonlySet<number>,
  ) {
    const size = (this.size = bytes.length);
    this.start = new Int32Array(size + 1);
    for (let id = 0; id < size; id++) this.start[id + 1] = this.start[id] + (bytes[id]?.length ?? 0);
    this.data = new Uint8Array(this.start[size]);
    this.empty = new Uint8Array(size);
    this.plainEnd = new Int32Array(size);
    const lists: number[][] = [];
    const emptyIds: number[] = [];
    const mixed: number[] = [];
    const tailOf: number[] = [];
    const tailIndex = new Map<string, number>();
    const tails: Uint8Array[] = [];
    for (let id = 0; id < size; id++) {
      const t = bytes[id];
      if (t) this.data.set(t, this.start[id]);
      if (!t || t.length === 0 || eos.has(id)) {
        this.empty[id] = 1;
        emptyIds.push(id);
        continue;
      }
      const plain = plainLength(t);
      this.plainEnd[id] = this.start[id] + plain;
      if (plain < t.length) {
        const tail = t.slice(plain);
        const key = String.fromCharCode(...tail);
        let i = tailIndex.get(key);
        if (i === undefined) tailIndex.set(key, (i = tails.push(tail) - 1));
        mixed.push(id);
        tailOf.push(i);
      }
      (lists[t[0] * 257 + (t.length > 1 ? t[1] : 256)] ??= []).push(id);
    }
    this.emptyIds = Int32Array.from(emptyIds);
    this.mixed = Int32Array.from(mixed);
    this.tailOf = Int32Array.from(tailOf);
    this.tails = tails;
    this.groups = Array.from({ length: 256 * 257 }, (_, i) => (lists[i] ? Int32Array.from(lists[i]) : undefined));
  }

  /** Per token table, pattern and pattern state: the tokens it can take (GrammarConstraint.tokensTaken). */
  readonly taken = new Map<PlainChars, WeakMap<Regex, Map<number, Int32Array>>>();

  private wholeCharsCache: (PlainChars & { cut: Int32Array }) | undefined;

  /**
   * The code points of every token that is whole UTF-8 characters (`ids`), as plainChars has those
   * of string text; `cut`: the tokens that start or end inside a character (built on the first
   * whole-reply regex).
   */
  get wholeChars(): PlainChars & { cut: Int32Array } {
    if (this.wholeCharsCache) return this.wholeCharsCache;
    const ids: number[] = [];
    const cut: number[] = [];
    const chars: number[] = [];
    const at = new Int32Array(this.size + 1);
    const text = new TextDecoder();
    for (let id = 0; id < this.size; id++) {
      at[id] = chars.length;
      if (this.empty[id]) continue;
      const bytes = this.data.subarray(this.start[id], this.start[id + 1]);
      const before = chars.length;
      let j = 0;
      while (j < bytes.length) {
        const n = utf8CharLength(bytes, j);
        if (n === 0) break;
        chars.push(n === 1 ? bytes[j] : text.decode(bytes.subarray(j, j + n)).codePointAt(0)!);
        j += n;
      }
      if (j === bytes.length) ids.push(id);
      else {
        chars.length = before;
        cut.push(id);
      }
    }
    at[this.size] = chars.length;
    this.wholeCharsCache = { ids: Int32Array.from(ids), at, chars: Int32Array.from(chars), cut: Int32Array.from(cut) };
    return this.wholeCharsCache;
  }

  private plainCharsCache: PlainChars | undefined;

  /** The code points of the vocabulary's string text (built on the first string with a pattern or length limit). */
  get plainChars(): PlainChars {
    if (this.plainCharsCache) return this.plainCharsCache;
    const ids: number[] = [];
    const chars: number[] = [];
    const at = new Int32Array(this.size + 1);
    const text = new TextDecoder();
    for (let id = 0; id < this.size; id++) {
      at[id] = chars.length;
      if (this.empty[id]) continue;
      if (this.plainEnd[id] === this.start[id + 1]) ids.push(id);
      for (const ch of text.decode(this.data.subarray(this.start[id], this.plainEnd[id])))
        chars.push(ch.codePointAt(0)!);
    }
    at[this.size] = chars.length;
    this.plainCharsCache = { ids: Int32Array.from(ids), at, chars: Int32Array.from(chars) };
    return this.plainCharsCache;
  }
}

/**
 * Code points of a vocabulary's string text: `ids` the tokens that are plain text whole; every
 * token's plain start (all of a plain one) at chars[at[id] .. at[id + 1]).
 */
interface PlainChars {
  ids: Int32Array;
  at: Int32Array;
  chars: Int32Array;
}

export class GrammarConstraint {
  private stacks: Stack[];
  private scratch = new Float32Array(0);
  /** The stacks `scratch` holds the allowed tokens of (allowed()). */
  private allowedFor: Stack[] | null = null;

  constructor(
    root: Node,
    private readonly vocab: TokenVocabulary,
    leadingWhitespace = false,
  ) {
    this.stacks = initial(root, leadingWhitespace);
  }

  /** The document is complete and nothing may follow: generation should end here. */
  get finished(): boolean {
    return finished(this.stacks);
  }

  /**
   * Sets the logit of every token the grammar does not allow next to -Infinity, in place. Returns
   * whether an allowed token kept a logit above -Infinity (not when HiRE's output layer left out
   * every allowed one).
   */
  mask(logits: Float32Array): boolean {
    const allowed = this.allowed();
    let any = false;
    for (let i = 0; i < logits.length; i++) {
      if (i >= allowed.length || allowed[i] !== 0) logits[i] = -Infinity;
      else if (logits[i] !== -Infinity) any = true;
    }
    return any;
  }

  /**
   * 0 for each token allowed next, -Infinity for the others: computed once per state (a step's
   * allowedTokens and mask share it).
   */
  private allowed(): Float32Array {
    if (this.allowedFor === this.stacks) return this.scratch;
    const { eos, size } = this.vocab;
    if (this.scratch.length !== size) this.scratch = new Float32Array(size);
    const out = this.scratch.fill(-Infinity);
    const keep = (id: number) => {
      out[id] = 0;
    };
    const text = stringState(this.stacks);
    const regex = regexState(this.stacks);
    if (inFreeString(this.stacks)) this.maskInString(out);
    else if (text) this.maskInText(text, keep);
    else if (regex) {
      // Tokens of characters the pattern takes stay in it (allowed); the rest may leave it into what
      // follows: by groups, unless nothing follows (a whole-reply regex: only cut characters remain).
      this.tokensTaken(regex.re, regex.dfa, this.vocab.wholeChars).forEach(keep);
      if (!regex.whole) this.maskByGroups(keep, (id) => out[id] === 0);
      else {
        const { data, start } = this.vocab;
        for (const id of this.vocab.wholeChars.cut) if (feedAll(this.stacks, data, start[id], start[id + 1])) keep(id);
      }
    } else this.maskByGroups(keep);
    if (accepting(this.stacks)) for (const id of eos) if (id < size) out[id] = 0;
    this.allowedFor = this.stacks;
    return out;
  }

  /**
   * Inside a string almost every token is allowed: all are, but the special ones and those whose
   * tail (what follows their plain text) the automaton refuses. Each distinct tail is run once.
   */
  private maskInString(out: Float32Array): void {
    const { emptyIds, mixed, tailOf, tails } = this.vocab;
    out.fill(0);
    for (const id of emptyIds) out[id] = -Infinity;
    const tailOk = tails.map((t) => feedAll(this.stacks, t) !== null);
    for (let i = 0; i < mixed.length; i++) if (!tailOk[tailOf[i]]) out[mixed[i]] = -Infinity;
  }

  /**
   * Inside a string with a pattern or a length limit: plain-text tokens by their characters (the
   * pattern's verdict per state cached; the length checked against what is left), the others (quotes,
   * escapes, partial characters) through the automaton.
   */
  private maskInText(text: StringState, keep: (id: number) => void): void {
    const { ids, at } = this.vocab.plainChars;
    const room = text.max - text.n;
    const candidates = text.re ? this.tokensTaken(text.re, text.dfa, this.vocab.plainChars) : ids;
    for (let i = 0; i < candidates.length; i++) {
      const id = candidates[i];
      if (at[id + 1] - at[id] <= room) keep(id);
    }
    // The rest: their plain start as above, then their tail from where it leaves the string (each
    // distinct place and tail run once).
    const { mixed, tailOf, tails } = this.vocab;
    const { chars } = this.vocab.plainChars;
    const verdicts = new Map<number, boolean>();
    for (let i = 0; i < mixed.length; i++) {
      const id = mixed[i];
      const count = at[id + 1] - at[id];
      if (count > room) continue;
      let dfa = text.dfa;
      if (text.re) for (let j = at[id]; j < at[id + 1] && dfa >= 0; j++) dfa = text.re.step(dfa, chars[j]);
      if (text.re && dfa < 0) continue;
      const n = text.n + count;
      const key = n < 65536 ? ((dfa + 1) * 65536 + n) * tails.length + tailOf[i] : -1;
      let ok = verdicts.get(key);
      if (ok === undefined) {
        ok = feedAll(withText(this.stacks, n, dfa), tails[tailOf[i]]) !== null;
        if (key >= 0) verdicts.set(key, ok);
      }
      if (ok) keep(id);
    }
  }

  /**
   * The tokens of `table` (string text: plainChars; any text: wholeChars) whose characters `re` can
   * take, one by one, from `state`; computed once per pattern, state and table.
   */
  private tokensTaken(re: Regex, state: number, table: PlainChars): Int32Array {
    // Kept with the vocabulary: a grammar used again (cachedGrammar) finds its lists built.
    let byRe = this.vocab.taken.get(table);
    if (!byRe) this.vocab.taken.set(table, (byRe = new WeakMap()));
    let byState = byRe.get(re);
    if (!byState) byRe.set(re, (byState = new Map()));
    let list = byState.get(state);
    if (list) return list;
    const { ids, at, chars } = table;
    const ok: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      let s = state;
      for (let j = at[ids[i]]; j < at[ids[i] + 1] && s >= 0; j++) s = re.step(s, chars[j]);
      if (s >= 0) ok.push(ids[i]);
    }
    byState.set(state, (list = Int32Array.from(ok)));
    return list;
  }

  /** Elsewhere: tokens by their first two bytes, a whole group ruled out by one step (`known`: already allowed). */
  private maskByGroups(keep: (id: number) => void, known?: (id: number) => boolean): void {
    const { data, start, groups } = this.vocab;
    // Groups whose tokens are all allowed already cost nothing (not even the automaton's step).
    const open = (group: Int32Array | undefined): group is Int32Array => !!group && !(known && group.every(known));
    for (let b1 = 0; b1 < 256; b1++) {
      let any = false;
      for (let b2 = 0; b2 <= 256 && !any; b2++) any = open(groups[b1 * 257 + b2]);
      if (!any) continue;
      const one = feed(this.stacks, b1);
      if (one.length === 0) continue;
      for (let b2 = 0; b2 <= 256; b2++) {
        const group = groups[b1 * 257 + b2];
        if (!open(group)) continue;
        if (b2 === 256) {
          group.forEach(keep);
          continue;
        }
        const two = feed(one, b2);
        if (two.length === 0) continue;
        for (let i = 0; i < group.length; i++) {
          const id = group[i];
          if (known?.(id)) continue;
          const from = start[id] + 2;
          const to = start[id + 1];
          if (from === to || feedAll(two, data, from, to) !== null) keep(id);
        }
      }
    }
  }

  /**
   * The tokens allowed next when there are at most `limit` of them (the output layer then needs only
   * their rows), else null. Inside a free string almost all are: null at once.
   */
  allowedTokens(limit: number): Int32Array | null {
    if (inFreeString(this.stacks)) return null;
    const allowed = this.allowed();
    const ids: number[] = [];
    for (let i = 0; i < allowed.length; i++) {
      if (allowed[i] !== 0) continue;
      if (ids.length === limit) return null;
      ids.push(i);
    }
    return Int32Array.from(ids);
  }

  /** Moves the grammar past the chosen token (one mask() allowed). */
  advance(id: number): void {
    const { eos, empty, data, start } = this.vocab;
    if (eos.has(id)) return;
    const next = id < this.vocab.size && !empty[id] ? feedAll(this.stacks, data, start[id], start[id + 1]) : null;
    if (!next) throw new Error(`token ${id} does not continue the grammar`);
    this.stacks = next;
  }

  /** Moves the grammar past these bytes; false (and no move) where it does not take them. */
  advanceBytes(bytes: Uint8Array): boolean {
    const next = feedAll(this.stacks, bytes);
    if (next) this.stacks = next;
    return next !== null;
  }
}

/**
 * A grammar that holds only from where the reply's bytes reach a trigger (a tool-call marker such as
 * `<tool_call>`) until its document is complete; then the text is free again and the trigger re-arms.
 * So a model that decides by itself to call a tool writes a well-formed call, and is free otherwise.
 * An `opening` (Llama 3's `{"name"`: a call with no marker) starts the grammar only where the reply
 * opens with it (after whitespace), and is the document's own first bytes, not a marker before it.
 */
export class TriggeredGrammar {
  private active: GrammarConstraint | null = null;
  /** The last bytes of free text, enough to find a trigger that spans tokens. */
  private recent = new Uint8Array(0);
  /** The reply's bytes so far while it may still open with `opening`; null once it cannot. */
  private head: Uint8Array | null;

  constructor(
    private readonly trigger: Uint8Array | null,
    private readonly root: Node,
    private readonly vocab: TokenVocabulary,
    private readonly opening: Uint8Array | null = null,
  ) {
    this.head = opening && opening.length > 0 ? new Uint8Array(0) : null;
  }

  /** The grammar holding the next token, or null while the text is free. */
  get current(): GrammarConstraint | null {
    return this.active;
  }

  advance(id: number): void {
    if (this.active) {
      this.active.advance(id);
      if (this.active.finished) this.active = null;
      return;
    }
    const { data, start, empty } = this.vocab;
    if (id >= this.vocab.size || empty[id]) return;
    const piece = data.subarray(start[id], start[id + 1]);
    if (this.head && this.opens(piece)) return;
    if (!this.trigger) return;
    const bytes = new Uint8Array(this.recent.length + piece.length);
    bytes.set(this.recent);
    bytes.set(piece, this.recent.length);
    const at = indexOf(bytes, this.trigger);
    if (at < 0) {
      this.recent = bytes.slice(Math.max(0, bytes.length - this.trigger.length + 1));
      return;
    }
    // The trigger is written: the grammar starts after it (with what this token wrote past it, if
    // the grammar takes that; a token that ran on into something else leaves the text free).
    this.recent = new Uint8Array(0);
    this.start(bytes.subarray(at + this.trigger.length));
  }

  /** The reply's start with `piece` added: whether it opened with `opening` and the grammar took it. */
  private opens(piece: Uint8Array): boolean {
    const head = new Uint8Array(this.head!.length + piece.length);
    head.set(this.head!);
    head.set(piece, this.head!.length);
    let ws = 0;
    while (ws < head.length && isWs(head[ws])) ws++;
    const body = head.subarray(ws);
    const opening = this.opening!;
    const n = Math.min(body.length, opening.length);
    if (!body.subarray(0, n).every((byte, k) => byte === opening[k])) {
      this.head = null; // the reply opened otherwise
      return false;
    }
    if (body.length < opening.length) {
      this.head = head; // not decided yet
      return false;
    }
    this.head = null;
    return this.start(body);
  }

  /** Starts the grammar on `bytes` (what the reply wrote of the document); false where it refuses them. */
  private start(bytes: Uint8Array): boolean {
    const g = new GrammarConstraint(this.root, this.vocab, true);
    if (g.advanceBytes(bytes) && !g.finished) this.active = g;
    return this.active !== null;
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
