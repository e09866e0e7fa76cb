// Numeric bounds (minimum, maximum, exclusiveMinimum, exclusiveMaximum) for the byte automaton: given
// the digits of a number written so far, whether some way of finishing it lands inside the bounds,
// and whether the number as it stands does. Exact: values are decimals (a BigInt over a power of 10),
// never floats, so a bound like 0.1 or 9007199254740993 means what it says.

/** Digits a number's integer part and its fraction may have (the automaton's limits). */
export const MAX_INT_DIGITS = 16;
export const MAX_FRAC_DIGITS = 16;

/** n / 10^s. */
export interface Decimal {
  readonly n: bigint;
  readonly s: number;
}

export interface Bound {
  readonly v: Decimal;
  /** Exclusive (< or >) rather than inclusive. */
  readonly open: boolean;
}

export interface Bounds {
  readonly lo?: Bound;
  readonly hi?: Bound;
  /** Integers only: the value must be a multiple of this (multipleOf), a positive integer. */
  readonly step?: bigint;
}

/** A JSON number's text as a Decimal (exact), or undefined when it is not one. */
export function parseDecimal(text: string): Decimal | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) return undefined;
  const digits = BigInt(m[2] + (m[3] ?? "")) * (m[1] ? -1n : 1n);
  const s = (m[3]?.length ?? 0) - Number(m[4] ?? 0);
  return s >= 0 ? { n: digits, s } : { n: digits * 10n ** BigInt(-s), s: 0 };
}

/** -1, 0 or 1 as a is below, at or above b. */
export function cmp(a: Decimal, b: Decimal): number {
  const s = Math.max(a.s, b.s);
  const x = a.n * 10n ** BigInt(s - a.s);
  const y = b.n * 10n ** BigInt(s - b.s);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Whether v satisfies the bounds. */
export function within(v: Decimal, b: Bounds): boolean {
  if (b.step !== undefined && (v.s > 0 || v.n % b.step !== 0n)) return false;
  if (b.lo && (b.lo.open ? cmp(v, b.lo.v) <= 0 : cmp(v, b.lo.v) < 0)) return false;
  if (b.hi && (b.hi.open ? cmp(v, b.hi.v) >= 0 : cmp(v, b.hi.v) > 0)) return false;
  return true;
}

/** A real interval between two decimals, each end open or closed. */
interface Interval {
  lo: Decimal;
  loClosed: boolean;
  hi: Decimal;
  hiClosed: boolean;
}

/** Whether the interval holds a point inside the bounds. */
function meets(i: Interval, b: Bounds): boolean {
  let [lo, loClosed, hi, hiClosed] = [i.lo, i.loClosed, i.hi, i.hiClosed];
  if (b.lo) {
    const c = cmp(b.lo.v, lo);
    if (c > 0 || (c === 0 && b.lo.open)) [lo, loClosed] = [b.lo.v, !b.lo.open];
  }
  if (b.hi) {
    const c = cmp(b.hi.v, hi);
    if (c < 0 || (c === 0 && b.hi.open)) [hi, hiClosed] = [b.hi.v, !b.hi.open];
  }
  const c = cmp(lo, hi);
  return c < 0 || (c === 0 && loClosed && hiClosed);
}

const pow10 = (k: number) => 10n ** BigInt(k);

/**
 * Whether a number whose text so far is `neg`, integer digits `int` and (after a dot, `dot`) fraction
 * digits `frac` can still end inside the bounds. `moreInt` / `moreFrac`: how many more digits each part
 * may take. Integers (`integer`) take no fraction, and their bounds are met by integers only.
 */
export function reachable(
  b: Bounds,
  integer: boolean,
  neg: boolean,
  int: string,
  dot: boolean,
  frac: string,
  moreInt: number,
  moreFrac: number,
): boolean {
  // The magnitudes the number can still reach, as intervals; negated for a minus sign.
  const spans: Interval[] = [];
  if (int === "") {
    // Only a minus sign so far: any magnitude up to the digit limit.
    spans.push({ lo: { n: 0n, s: 0 }, loClosed: true, hi: { n: pow10(moreInt), s: 0 }, hiClosed: false });
  } else if (dot) {
    const x: Decimal = { n: BigInt(int + frac), s: frac.length };
    const width = moreFrac > 0 ? 1n : 0n; // the digits that may follow add less than one unit of the last place
    spans.push({ lo: x, loClosed: true, hi: { n: x.n + width, s: x.s }, hiClosed: width === 0n });
  } else {
    const i = BigInt(int);
    // k more integer digits (none after a leading 0), then (reals) any fraction: [lo, lo + 10^k) for
    // reals, [lo, lo + 10^k - 1] for integers.
    for (let k = 0; k <= (int === "0" ? 0 : moreInt); k++) {
      const lo = i * pow10(k);
      const hi = integer ? lo + pow10(k) - 1n : lo + pow10(k);
      spans.push({ lo: { n: lo, s: 0 }, loClosed: true, hi: { n: hi, s: 0 }, hiClosed: integer });
    }
  }
  const bounds = integer ? integerBounds(b) : b;
  if (integer && b.step !== undefined) return spans.some((sp) => holdsMultiple(neg ? negate(sp) : sp, bounds, b.step!));
  return spans.some((sp) => meets(neg ? negate(sp) : sp, bounds));
}

/** Whether a closed integer interval, within integer bounds, holds a multiple of `step`. */
function holdsMultiple(i: Interval, b: Bounds, step: bigint): boolean {
  let lo = i.lo.n;
  let hi = i.hi.n;
  if (b.lo && b.lo.v.n > lo) lo = b.lo.v.n;
  if (b.hi && b.hi.v.n < hi) hi = b.hi.v.n;
  if (lo > hi) return false;
  const first = lo % step === 0n ? lo : lo > 0n ? (lo / step + 1n) * step : (lo / step) * step; // the first multiple ≥ lo
  return first <= hi;
}

function negate(i: Interval): Interval {
  return {
    lo: { n: -i.hi.n, s: i.hi.s },
    loClosed: i.hiClosed,
    hi: { n: -i.lo.n, s: i.lo.s },
    hiClosed: i.loClosed,
  };
}

/** Bounds on integers as closed integer bounds (x > 2.5 → x ≥ 3; x < 3 → x ≤ 2). */
function integerBounds(b: Bounds): Omit<Bounds, "step"> {
  const floor = (d: Decimal) => {
    const p = pow10(d.s);
    const q = d.n / p;
    return d.n < 0n && q * p !== d.n ? q - 1n : q;
  };
  const isInt = (d: Decimal) => d.n % pow10(d.s) === 0n;
  const out: { lo?: Bound; hi?: Bound } = {};
  if (b.lo) {
    const f = floor(b.lo.v);
    const lo = isInt(b.lo.v) ? (b.lo.open ? f + 1n : f) : f + 1n;
    out.lo = { v: { n: lo, s: 0 }, open: false };
  }
  if (b.hi) {
    const f = floor(b.hi.v);
    const hi = isInt(b.hi.v) && b.hi.open ? f - 1n : f;
    out.hi = { v: { n: hi, s: 0 }, open: false };
  }
  return out;
}

/** Whether any number (an integer, for integers) that can be written satisfies the bounds. */
export function satisfiable(b: Bounds, integer: boolean, maxInt: number, maxFrac: number): boolean {
  return [false, true].some((neg) => reachable(b, integer, neg, "", false, "", maxInt, maxFrac));
}
