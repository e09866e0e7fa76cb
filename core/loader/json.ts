// Reading small JSON files (config.json, tokenizer.json, index files) with size and UTF-8 checks,
// so a wrong or hostile file becomes a ModelError instead of an exception from deep inside.
import { readFileSync, statSync } from "node:fs";
import { ModelError, type ModelErrorCode } from "./errors.js";

/** tokenizer.json of large-vocabulary models is ~10-20 MB; anything far beyond is not a config. */
export const MAX_JSON_BYTES = 256 * 1024 * 1024;

const utf8 = new TextDecoder("utf-8", { fatal: true });

export function decodeJson(bytes: Uint8Array, file: string, what = "JSON", code: ModelErrorCode = "BAD_JSON"): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new ModelError(code, file, `${what} is not valid UTF-8`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ModelError(code, file, `${what} is malformed: ${(e as Error).message}`);
  }
}

export function readJsonFile(file: string): unknown {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new ModelError("NOT_FOUND", file, "is a directory or device, not a file");
    size = st.size;
  } catch (e) {
    if (e instanceof ModelError) throw e;
    throw new ModelError("NOT_FOUND", file, "file not found");
  }
  if (size > MAX_JSON_BYTES) {
    throw new ModelError("BAD_JSON", file, `file is ${size} bytes, larger than ${MAX_JSON_BYTES}`);
  }
  return decodeJson(readFileSync(file), file);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
