// JSON Schema → the grammar nodes the byte automaton (automaton.ts) walks. The subset is what
// structured-output clients send (OpenAI's strict schemas, pydantic's model_json_schema()): types,
// properties/required/additionalProperties, items/prefixItems with minItems/maxItems,
// minLength/maxLength, pattern (regex.ts) and some formats, numeric bounds and integer multipleOf
// (bounds.ts), enum, const, anyOf/oneOf, local $ref. Keywords that would constrain values in ways the
// automaton does not enforce (uniqueItems, minProperties, ...) are refused with an error naming them,
// rather than ignored, so a reply never silently breaks the client's schema. Annotations (title,
// description, other formats, ...) are ignored, as JSON Schema itself treats them.
import { UsageError } from "../loader/errors.js";
import { Regex } from "./regex.js";
import {
  cmp,
  MAX_FRAC_DIGITS,
  MAX_INT_DIGITS,
  parseDecimal,
  satisfiable,
  type Bound,
  type Bounds,
  type Decimal,
} from "./bounds.js";

export type Node =
  | { readonly t: "any" }
  /** props in the order they must appear (optional ones may be skipped); extra: a map's values (no props). */
  | { readonly t: "object"; readonly props: readonly Prop[]; readonly extra: Node | null }
  /** prefix: the first items' own schemas (a tuple: prefixItems), `items` the rest's. */
  | {
      readonly t: "array";
      readonly items: Node;
      readonly min: number;
      readonly max: number;
      readonly prefix?: readonly Node[];
    }
  | { readonly t: "string"; readonly min: number; readonly max: number; readonly pattern?: Regex }
  | { readonly t: "number"; readonly integer: boolean; readonly bounds?: Bounds }
  /**
   * One of these exact byte strings: a JSON value (enum, const, true/false/null), or with `raw` fixed
   * text around one (a tool call's markers), which takes no whitespace before it.
   */
  | { readonly t: "literal"; readonly texts: readonly Uint8Array[]; readonly raw?: boolean }
  /** `raw` (seq, union, ref): text of a grammar (GBNF), where JSON's whitespace between values is not implied. */
  | { readonly t: "union"; readonly options: readonly Node[]; readonly raw?: boolean }
  /** Values one after another (fixed text around a tool call's JSON). */
  | { readonly t: "seq"; readonly parts: readonly Node[]; readonly raw?: boolean }
  /** Raw text (not JSON) that matches a regex from start to end (a reply held to a pattern). */
  | { readonly t: "regex"; readonly re: Regex }
  /** A $ref, compiled on first use (so recursive schemas work). */
  | { readonly t: "ref"; readonly get: () => Node; readonly raw?: boolean };

export interface Prop {
  readonly name: string;
  /** The key as it is written between the quotes (JSON-escaped, UTF-8). */
  readonly key: Uint8Array;
  readonly node: Node;
  readonly required: boolean;
}

export const ANY: Node = { t: "any" };
const utf8 = new TextEncoder();

/** A reply that is exactly one of these texts (a choice). */
export function choice(texts: readonly string[]): Node {
  return { t: "literal", texts: texts.map((s) => utf8.encode(s)), raw: true };
}

/** A reply of raw text matching `pattern` (ECMAScript syntax, regex.ts's subset) from start to end. */
export function wholeRegex(pattern: string): Node {
  const re = Regex.compile(pattern, true);
  // A reply must have at least one character (the document cannot be empty).
  if (!re.admits(re.initial(), 0, 0x10ffff))
    throw new UsageError(`pattern ${JSON.stringify(pattern)} matches only the empty text`);
  return { t: "regex", re };
}

/** Exact text (no JSON meaning): a literal node. */
export function text(s: string): Node {
  return { t: "literal", texts: [utf8.encode(s)], raw: true };
}

/** A property, its key spelled as JSON writes it between the quotes. */
function prop(name: string, node: Node, required: boolean): Prop {
  return { name, key: utf8.encode(JSON.stringify(name).slice(1, -1)), node, required };
}

/** An object of exactly these properties, all required, in this order. */
export function objectOf(props: readonly (readonly [string, Node])[]): Node {
  return {
    t: "object",
    props: props.map(([name, node]) => prop(name, node, true)),
    extra: null,
  };
}

/** Any JSON object (OpenAI's `response_format: {type: "json_object"}`). */
export const ANY_OBJECT: Node = { t: "object", props: [], extra: ANY };

// Validation keywords the automaton cannot enforce: refused.
const REFUSED = [
  "patternProperties",
  "propertyNames",
  "uniqueItems",
  "contains",
  "minContains",
  "maxContains",
  "minProperties",
  "maxProperties",
  "dependentRequired",
  "dependentSchemas",
  "if",
  "then",
  "else",
  "not",
  "unevaluatedProperties",
  "unevaluatedItems",
  "$dynamicRef",
];

const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];

/**
 * A JSON Schema as grammar nodes. Objects' properties are written in the schema's order (as
 * llama.cpp's grammars do), and an object that lists properties gets no others (valid whatever
 * `additionalProperties` says); one that lists none is a map of any keys.
 */
export function compileSchema(schema: unknown): Node {
  const refs = new Map<string, Node>();
  const compile = (s: unknown, path: string): Node => {
    if (s === true) return ANY;
    const fail = (what: string): never => {
      throw new UsageError(`JSON schema at ${path}: ${what}`);
    };
    if (s === false) fail("false accepts nothing");
    if (typeof s !== "object" || s === null || Array.isArray(s)) fail("a schema must be an object or a boolean");
    const o = s as Record<string, unknown>;
    for (const k of REFUSED) if (k in o) fail(`"${k}" is not supported`);
    if (o.$ref !== undefined) {
      if (typeof o.$ref !== "string") fail(`"$ref" must be a string`);
      const ref = o.$ref as string;
      if (ref !== "#" && !/^#\/(\$defs|definitions)\/[^/]+$/.test(ref))
        fail(`"$ref" ${JSON.stringify(ref)}: only "#", "#/$defs/NAME" and "#/definitions/NAME" are supported`);
      const others = Object.keys(o).filter(
        (k) => !ANNOTATIONS.has(k) && k !== "$ref" && k !== "$defs" && k !== "definitions",
      );
      if (others.length > 0) fail(`"$ref" beside ${others.map((k) => `"${k}"`).join(", ")} is not supported`);
      return refNode(ref);
    }
    const alternatives = o.anyOf ?? o.oneOf;
    if (alternatives !== undefined) {
      const key = o.anyOf !== undefined ? "anyOf" : "oneOf";
      if (!Array.isArray(alternatives) || alternatives.length === 0) fail(`"${key}" must be a non-empty array`);
      const rest = { ...o };
      delete rest.anyOf;
      delete rest.oneOf;
      if (hasConstraints(rest))
        fail(`"${key}" beside other keywords is not supported (put them inside each alternative)`);
      return union((alternatives as unknown[]).map((a, i) => compile(a, `${path}/${key}/${i}`)));
    }
    if (o.allOf !== undefined) {
      if (!Array.isArray(o.allOf) || o.allOf.length !== 1 || hasConstraints({ ...o, allOf: undefined }))
        fail(`"allOf" is supported with one schema and nothing beside it`);
      return compile((o.allOf as unknown[])[0], `${path}/allOf/0`);
    }
    if (o.const !== undefined) return literal([o.const], path);
    if (o.enum !== undefined) {
      if (!Array.isArray(o.enum) || o.enum.length === 0) fail(`"enum" must be a non-empty array`);
      return literal(o.enum as unknown[], path);
    }
    let types: string[];
    if (o.type === undefined) {
      if ("properties" in o || "additionalProperties" in o || "required" in o) types = ["object"];
      else if ("items" in o || "prefixItems" in o || "minItems" in o || "maxItems" in o) types = ["array"];
      else if ("minLength" in o || "maxLength" in o || "pattern" in o) types = ["string"];
      else if (["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].some((k) => k in o)) types = ["number"];
      else if ("multipleOf" in o) types = ["integer"];
      else return ANY;
    } else if (typeof o.type === "string") types = [o.type];
    else if (Array.isArray(o.type) && o.type.length > 0 && o.type.every((t) => typeof t === "string"))
      types = o.type as string[];
    else return fail(`"type" must be a type name or a non-empty list of them`);
    for (const t of types) if (!TYPES.includes(t)) fail(`unknown type ${JSON.stringify(t)}`);
    return union(types.map((t) => typed(t, o, path, fail)));
  };

  const typed = (t: string, o: Record<string, unknown>, path: string, fail: (w: string) => never): Node => {
    const count = (k: string, dflt: number): number => {
      const v = o[k];
      if (v === undefined) return dflt;
      if (!Number.isInteger(v) || (v as number) < 0) fail(`"${k}" must be a non-negative integer`);
      return v as number;
    };
    switch (t) {
      case "object": {
        const props = o.properties ?? {};
        if (typeof props !== "object" || props === null || Array.isArray(props)) fail(`"properties" must be an object`);
        const required = o.required ?? [];
        if (!Array.isArray(required) || !required.every((r) => typeof r === "string"))
          fail(`"required" must be a list of property names`);
        const names = Object.keys(props as object);
        for (const r of required as string[])
          if (!names.includes(r)) fail(`required property ${JSON.stringify(r)} is not in "properties"`);
        const list = names.map((name) =>
          prop(
            name,
            compile((props as Record<string, unknown>)[name], `${path}/properties/${name}`),
            (required as string[]).includes(name),
          ),
        );
        const extra = o.additionalProperties;
        // With properties listed, only those are written, whatever additionalProperties allows
        // beside them: a document without extra keys is valid either way (pydantic's extra="allow").
        if (list.length > 0) {
          if (extra !== undefined && typeof extra !== "boolean") compile(extra, `${path}/additionalProperties`);
          return { t: "object", props: list, extra: null };
        }
        return {
          t: "object",
          props: [],
          extra: extra === undefined || extra === true ? ANY : compile(extra, `${path}/additionalProperties`),
        };
      }
      case "array": {
        const min = count("minItems", 0);
        let max = count("maxItems", Infinity);
        if (o.prefixItems !== undefined && !Array.isArray(o.prefixItems))
          fail(`"prefixItems" must be a list of schemas`);
        const prefix = ((o.prefixItems as unknown[] | undefined) ?? []).map((p, i) =>
          compile(p, `${path}/prefixItems/${i}`),
        );
        // items: false after prefixItems (pydantic's tuples): nothing past the tuple.
        if (o.items === false) max = Math.min(max, prefix.length);
        if (max < min) fail(`"maxItems" is below "minItems" (or the tuple is shorter)`);
        const items = o.items === undefined || o.items === false ? ANY : compile(o.items, `${path}/items`);
        return { t: "array", items, min, max, ...(prefix.length > 0 && { prefix }) };
      }
      case "string": {
        const min = count("minLength", 0);
        const max = count("maxLength", Infinity);
        if (max < min) fail(`"maxLength" is below "minLength"`);
        if (o.pattern !== undefined && typeof o.pattern !== "string") fail(`"pattern" must be a string`);
        const source = (o.pattern as string | undefined) ?? FORMATS.get(o.format as string);
        let pattern: Regex | undefined;
        try {
          pattern = source === undefined ? undefined : Regex.compile(source);
        } catch (e) {
          fail((e as Error).message);
        }
        return { t: "string", min, max, ...(pattern && { pattern }) };
      }
      case "number":
      case "integer": {
        const bounds = numericBounds(o, t === "integer", fail);
        return { t: "number", integer: t === "integer", ...(bounds && { bounds }) };
      }
      case "boolean":
        return literal([true, false], path);
      default:
        return literal([null], path);
    }
  };

  const literal = (values: unknown[], path: string): Node => {
    const texts = values.map((v) => {
      const s = JSON.stringify(v);
      if (s === undefined) throw new UsageError(`JSON schema at ${path}: enum/const values must be JSON values`);
      return utf8.encode(s);
    });
    return { t: "literal", texts };
  };

  const refNode = (ref: string): Node => ({
    t: "ref",
    get: () => {
      let node = refs.get(ref);
      if (node === undefined) {
        const target = ref === "#" ? schema : resolve(schema, ref);
        // Placeholder first, so a schema that refers to itself compiles to a cycle, not a loop.
        const slot: { node?: Node } = {};
        refs.set(ref, { t: "ref", get: () => slot.node! });
        slot.node = compile(target, ref);
        node = slot.node;
        refs.set(ref, node);
      }
      return node;
    },
  });

  const root = compile(schema, "#");
  // A schema that reaches itself through $ref, anyOf or a sequence's start without a value in
  // between ({"$ref": "#"}, {"anyOf": [{"$ref": "#"}, ...]}) describes no document: refused here
  // rather than recursing forever when the reply starts.
  const entering = new Set<Node>();
  const done = new Set<Node>();
  const leftRecursion = (n: Node): void => {
    if (done.has(n)) return;
    if (entering.has(n)) throw new UsageError(`JSON schema: it refers to itself with no value in between`);
    entering.add(n);
    if (n.t === "ref") leftRecursion(n.get());
    else if (n.t === "union") n.options.forEach(leftRecursion);
    else if (n.t === "seq") leftRecursion(n.parts[0]);
    entering.delete(n);
    done.add(n);
  };
  leftRecursion(root);
  // Resolve every $ref now, so a dangling one is an error before generation rather than mid-reply.
  const seen = new Set<Node>();
  const walk = (n: Node): void => {
    if (seen.has(n)) return;
    seen.add(n);
    if (n.t === "ref") walk(n.get());
    else if (n.t === "object") {
      n.props.forEach((p) => walk(p.node));
      if (n.extra) walk(n.extra);
    } else if (n.t === "array") {
      walk(n.items);
      n.prefix?.forEach(walk);
    } else if (n.t === "union") n.options.forEach(walk);
    else if (n.t === "seq") n.parts.forEach(walk);
  };
  walk(root);
  return root;
}

/**
 * minimum / maximum / exclusiveMinimum / exclusiveMaximum as bounds, in both forms JSON Schema has
 * had (a number each, or draft 4's booleans beside minimum and maximum); undefined without any.
 */
function numericBounds(o: Record<string, unknown>, integer: boolean, fail: (w: string) => never): Bounds | undefined {
  const value = (k: string): Decimal | undefined => {
    const v = o[k];
    if (v === undefined || typeof v === "boolean") return undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) fail(`"${k}" must be a number`);
    return parseDecimal(JSON.stringify(v))!;
  };
  const pick = (
    incl: Decimal | undefined,
    excl: Decimal | undefined,
    draft4: unknown,
    lower: boolean,
  ): Bound | undefined => {
    if (draft4 === true) return incl && { v: incl, open: true };
    if (incl === undefined) return excl && { v: excl, open: true };
    if (excl === undefined) return { v: incl, open: false };
    // Both: the tighter one (the exclusive one where they are equal).
    const c = cmp(incl, excl);
    return (lower ? c > 0 : c < 0) ? { v: incl, open: false } : { v: excl, open: true };
  };
  const lo = pick(value("minimum"), value("exclusiveMinimum"), o.exclusiveMinimum, true);
  const hi = pick(value("maximum"), value("exclusiveMaximum"), o.exclusiveMaximum, false);
  let step: bigint | undefined;
  if (o.multipleOf !== undefined) {
    const m = o.multipleOf;
    if (!integer || typeof m !== "number" || !Number.isSafeInteger(m) || m < 1)
      fail(`"multipleOf" is supported for integers, as a positive integer`);
    step = BigInt(m as number);
  }
  if (!lo && !hi && step === undefined) return undefined;
  const bounds = { ...(lo && { lo }), ...(hi && { hi }), ...(step !== undefined && { step }) };
  if (!satisfiable(bounds, integer, MAX_INT_DIGITS, MAX_FRAC_DIGITS))
    fail(`no ${integer ? "integer" : "number"} of up to ${MAX_INT_DIGITS} digits is within the bounds`);
  return bounds;
}

/**
 * The formats written as patterns (as llama.cpp's grammars do); other formats stay annotations. With
 * both, `pattern` wins.
 */
const DATE = "\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])";
const TIME = "([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,9})?(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)";
// A Map, not an object: a format named "constructor" or "toString" is an annotation, not Object's.
const FORMATS = new Map([
  ["date", `^${DATE}$`],
  ["time", `^${TIME}$`],
  ["date-time", `^${DATE}T${TIME}$`],
  ["uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"],
]);

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "format",
  "deprecated",
  "readOnly",
  "writeOnly",
  "contentEncoding",
  "contentMediaType",
]);

/** Whether a schema object says more than annotations (and $defs). */
function hasConstraints(o: Record<string, unknown>): boolean {
  return Object.keys(o).some((k) => o[k] !== undefined && !ANNOTATIONS.has(k) && k !== "$defs" && k !== "definitions");
}

function resolve(schema: unknown, ref: string): unknown {
  const [, group, name] = ref.split("/");
  const own = (o: unknown, k: string) =>
    typeof o === "object" && o !== null && Object.hasOwn(o, k) ? (o as Record<string, unknown>)[k] : undefined;
  const target = own(own(schema, group), name);
  if (target === undefined) throw new UsageError(`JSON schema: "$ref" ${JSON.stringify(ref)} names nothing`);
  return target;
}

export function union(options: Node[]): Node {
  return options.length === 1 ? options[0] : { t: "union", options };
}
