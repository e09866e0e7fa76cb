// Whole-buffer reads and writes on file descriptors, for the importers (GGUF, FP8) that stream a
// model file into a new one: readSync/writeSync may move fewer bytes than asked.
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { ModelError } from "./errors.js";

/** `length` bytes of `file` from `offset`. */
export function readBytes(file: string, offset: number, length: number): Uint8Array {
  const fd = openSync(file, "r");
  try {
    const buf = new Uint8Array(length);
    readFully(fd, buf, offset, file);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Fills `buf` from `position` of the open `file`; a file that ends first is a TRUNCATED error naming it. */
export function readFully(fd: number, buf: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < buf.byteLength) {
    const n = readSync(fd, buf, off, buf.byteLength - off, position + off);
    if (n === 0) throw new ModelError("TRUNCATED", file, `the file ends at ${position + off}, inside a tensor`);
    off += n;
  }
}

export function writeAll(fd: number, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.byteLength) off += writeSync(fd, buf, off, buf.byteLength - off);
}
