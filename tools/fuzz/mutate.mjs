// Random edits for the fuzz harnesses: bytes of a file, values of a JSON document.

/** Random byte edits: flips, overwrites with edge values, a cut, a run of junk; mostly near the start (headers). */
export function mutateBytes(src, rng) {
  let out = Uint8Array.from(src);
  const n = 1 + Math.floor(rng.next() * 8);
  const where = () => {
    const headerish = rng.next() < 0.8;
    const span = headerish ? Math.min(out.length, 4096) : out.length;
    return Math.floor(rng.next() * span);
  };
  for (let i = 0; i < n; i++) {
    const r = rng.next();
    if (r < 0.4) out[where()] ^= 1 << Math.floor(rng.next() * 8);
    else if (r < 0.7) {
      const at = where();
      const edge = [0, 0xff, 0x7f, 0x80, 0xfe, 0x01][Math.floor(rng.next() * 6)];
      for (let j = 0; j < 1 + Math.floor(rng.next() * 8) && at + j < out.length; j++) out[at + j] = edge;
    } else if (r < 0.85) out = out.subarray(0, where());
    else {
      const at = where();
      const junk = Uint8Array.from({ length: 1 + Math.floor(rng.next() * 16) }, () => Math.floor(rng.next() * 256));
      const grown = new Uint8Array(out.length + junk.length);
      grown.set(out.subarray(0, at));
      grown.set(junk, at);
      grown.set(out.subarray(at), at + junk.length);
      out = grown;
    }
  }
  return out;
}

const JUNK = [-1, 0, 1, 1.5, 2 ** 31, 1e12, -1e12, NaN, "x", "", null, true, [], [1, 2], {}, { a: 1 }];

/** A JSON document with one to three values somewhere in it replaced by junk (or keys deleted). */
export function mutateJson(text, rng) {
  const doc = JSON.parse(text);
  const n = 1 + Math.floor(rng.next() * 3);
  for (let i = 0; i < n; i++) {
    // Walk down a random path to an object or array, then replace or delete one entry.
    let node = doc;
    for (let depth = 0; depth < 4; depth++) {
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      const k = keys[Math.floor(rng.next() * keys.length)];
      const child = node[k];
      if (typeof child === "object" && child !== null && rng.next() < 0.6) {
        node = child;
        continue;
      }
      if (rng.next() < 0.2 && !Array.isArray(node)) delete node[k];
      else node[k] = structuredClone(JUNK[Math.floor(rng.next() * JUNK.length)]); // a copy: later edits may reach it
      break;
    }
  }
  return JSON.stringify(doc);
}
