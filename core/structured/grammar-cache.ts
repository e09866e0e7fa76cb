// Grammars compiled from the same text are the same grammar: a client that sends one schema, regex
// or GBNF grammar with every request gets the nodes (and their regexes' lazily built DFAs, and the
// vocabulary's token lists per DFA state: constraint.ts) it got the first time, not a fresh compile
// whose masks start cold. A small LRU, so a client sending ever-new grammars cannot grow it.
import { compileSchema, type Node } from "./schema.js";

const MAX_GRAMMARS = 32;
const grammars = new Map<string, Node>();

/** The grammar `key` names (its kind and source text), built by `build` on first use. */
export function cachedGrammar(key: string, build: () => Node): Node {
  let node = grammars.get(key);
  if (node)
    grammars.delete(key); // re-inserted below: the most recently used
  else node = build(); // a refusal (UsageError) is not cached
  grammars.set(key, node);
  if (grammars.size > MAX_GRAMMARS) grammars.delete(grammars.keys().next().value!);
  return node;
}

/** A JSON Schema's grammar (compileSchema), the same nodes for the same schema. */
export function cachedSchema(schema: unknown): Node {
  return cachedGrammar(`schema:${JSON.stringify(schema)}`, () => compileSchema(schema));
}
