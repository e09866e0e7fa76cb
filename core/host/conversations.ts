// Conversations on disk: one JSON file per conversation, written atomically (a temporary file in
// the same folder, fsync, rename over the old one), so a crash mid-write leaves the previous
// version intact and never a half-written file. Files that fail to parse are skipped when listing
// and reported by name when opened, so one bad file never hides the others.
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { makeFolder } from "../loader/file-io.js";
import { parseConversation, ProtocolError, type Conversation, type ConversationSummary } from "./protocol.js";

const SUFFIX = ".json";
const TMP_SUFFIX = ".tmp";

export class ConversationStore {
  constructor(readonly dir: string) {
    makeFolder(dir); // a read-only or forbidden data folder is a CANNOT_WRITE error naming it
  }

  private file(id: string): string {
    return join(this.dir, id + SUFFIX);
  }

  list(): ConversationSummary[] {
    const out: ConversationSummary[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith(SUFFIX)) continue;
      const c = this.tryRead(join(this.dir, name));
      if (c) out.push(summary(c));
    }
    return out.sort((a, b) => b.updatedAt - a.updatedAt);
  }

  get(id: string): Conversation {
    const file = this.file(id);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      throw new ProtocolError(`conversation ${id} not found`);
    }
    try {
      return parseConversation(JSON.parse(text), file);
    } catch (e) {
      throw new ProtocolError(`${file} is damaged: ${(e as Error).message}`);
    }
  }

  save(c: Conversation): ConversationSummary {
    writeAtomic(this.file(c.id), JSON.stringify(c));
    return summary(c);
  }

  delete(id: string): boolean {
    const file = this.file(id);
    try {
      rmSync(file);
      return true;
    } catch {
      return false;
    }
  }

  private tryRead(file: string): Conversation | null {
    try {
      return parseConversation(JSON.parse(readFileSync(file, "utf8")), file);
    } catch {
      return null;
    }
  }
}

function summary(c: Conversation): ConversationSummary {
  return { id: c.id, title: c.title, updatedAt: c.updatedAt, messages: c.messages.length };
}

/**
 * Replace `file` with `text` so that readers (and a restart after a crash) see either the old or
 * the new content in full. The temporary name is unique per process so two writers cannot collide.
 */
export function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}${TMP_SUFFIX}`;
  try {
    const fd = openSync(tmp, "w");
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true }); // a full disk must not leave half a file behind
    throw e;
  }
}
