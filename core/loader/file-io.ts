// Whole-buffer reads and writes on file descriptors, for the importers (GGUF, FP8) and writers (model
// files, exports) that stream a model file into a new one: readSync/writeSync may move fewer bytes than
// asked. A disk that fills up mid-write is a NO_SPACE error naming the file, not a bare ENOSPC (and a
// read-only or forbidden place CANNOT_WRITE: writeError); an import checks its room before it starts
// (checkFreeSpace).
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statfsSync,
  writeSync,
} from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
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

/** `length` bytes of `file` from `offset`, in fresh pieces of at most `piece` bytes (to copy a range of a big file). */
export function* byteRange(file: string, offset: number, length: number, piece: number): Generator<Uint8Array> {
  const fd = openSync(file, "r");
  try {
    for (let off = 0; off < length; off += piece) {
      const buf = new Uint8Array(Math.min(piece, length - off));
      readFully(fd, buf, offset + off, file);
      yield buf;
    }
  } finally {
    closeSync(fd);
  }
}

/** Appends all of `buf` to the open `file` (at its current position). */
export function writeAll(fd: number, buf: Uint8Array, file: string): void {
  let off = 0;
  try {
    while (off < buf.byteLength) off += writeSync(fd, buf, off, buf.byteLength - off);
  } catch (e) {
    throw writeError(e, file);
  }
}

/** Writes all of `buf` at `position` of the open `file`. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, position: number, file: string): Promise<void> {
  let off = 0;
  try {
    while (off < buf.byteLength) {
      const { bytesWritten } = await fh.write(buf, off, buf.byteLength - off, position + off);
      off += bytesWritten;
    }
  } catch (e) {
    throw writeError(e, file);
  }
}

/** Why a file cannot be created or written, by errno code. */
const CANNOT_WRITE: Record<string, string> = {
  EROFS: "the file system is read-only",
  EACCES: "permission denied",
  EPERM: "permission denied",
  ENOENT: "its folder does not exist",
  ENOTDIR: "a part of its path is not a folder",
  EISDIR: "it is a folder",
};

/**
 * A failed creation or write of `file` (a file or folder): a full disk or quota as NO_SPACE, a
 * read-only or forbidden place as CANNOT_WRITE, each naming the file; any other error as it is.
 */
export function writeError(e: unknown, file: string): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? "";
  if (code === "ENOSPC" || code === "EDQUOT")
    return new ModelError("NO_SPACE", file, `the disk is full (${code}) writing this file`);
  const why = CANNOT_WRITE[code];
  return why ? new ModelError("CANNOT_WRITE", file, `cannot write here: ${why} (${code})`) : e;
}

/**
 * Makes folder `dir` and any missing parents, one level at a time (a recursive mkdir reports a
 * read-only parent as ENOENT); a failure is writeError's, naming the folder it could not make.
 */
export function makeFolder(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !existsSync(d) && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw writeError(e, d);
    }
  }
}

/**
 * Removes the entries of `dir` whose name `temp` matches, with the writing process's pid as its group
 * 1, where that process no longer runs: what an import, export or make-model killed mid-way left
 * (an 8B model's import: 16 GB). A live writer's are kept (it may be another process at work).
 */
export function removeDeadTemps(dir: string, temp: RegExp): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(temp.exec(name)?.[1]);
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isRunning(pid))
      rmSync(join(dir, name), { recursive: true, force: true });
  }
}

/**
 * `${out}.<pid>.tmp`, the name to write `out` under and then rename over it (the importers' folders,
 * the GGUF exporter's file), once what writers of `out` killed mid-way left beside it is removed.
 */
export function tempPathFor(out: string): string {
  removeDeadTemps(dirname(out), tempFor(basename(out)));
  return `${out}.${process.pid}.tmp`;
}

/**
 * A new, empty folder tempPathFor(out) to build `out` in. Its parent is made first (a path through a
 * file, a read-only or forbidden place: CANNOT_WRITE naming it).
 */
export function tempFolderFor(out: string): string {
  makeFolder(dirname(out));
  const tmp = tempPathFor(out);
  rmSync(tmp, { recursive: true, force: true });
  makeFolder(tmp);
  return tmp;
}

/**
 * Renames the finished model folder `tmp` (tempFolderFor's) to `out`. Where `out` already holds a
 * finished model folder (its config.json: another process importing the same source finished first,
 * the two having started before either was there), that one is kept and `tmp` removed: replacing it
 * would pull its files from under the process reading them. Anything else at `out` is replaced.
 * Returns whether `tmp` was put in place.
 */
export function moveIntoPlace(tmp: string, out: string): boolean {
  mkdirSync(dirname(out), { recursive: true });
  try {
    renameSync(tmp, out); // replaces a missing or empty `out`
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
  }
  if (existsSync(join(out, "config.json"))) {
    rmSync(tmp, { recursive: true, force: true });
    return false;
  }
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
  return true;
}

/** `s` with the characters a RegExp gives a meaning escaped. */
export const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** `name.<pid>.tmp`: tempPathFor's names for `name`. */
const tempFor = (name: string): RegExp => new RegExp(String.raw`^${escapeRegExp(name)}\.(\d+)\.tmp$`);

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // someone else's: running
  }
}

/**
 * Throws NO_SPACE when the disk that holds `dir` (or its nearest existing parent) has fewer than
 * `bytes` free for the calling user: `what` (e.g. "importing x.gguf") needs that much there.
 */
export function checkFreeSpace(dir: string, bytes: number, what: string): void {
  const free = freeBytes(dir);
  if (free !== undefined && free < bytes)
    throw new ModelError("NO_SPACE", dir, `${what} needs ${gb(bytes)} here; the disk has ${gb(free)} free`);
}

/** Bytes free to this user on the disk of `dir` (or its nearest existing parent); undefined where unknown. */
function freeBytes(dir: string): number | undefined {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  try {
    const s = statfsSync(d);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

const gb = (bytes: number): string =>
  bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
