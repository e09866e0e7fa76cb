// `hire serve`: the engine host over HTTP + WebSocket for a browser, plus the OpenAI-compatible
// endpoint. Listens, then loads --model (default: the built-in model) before it prints its address,
// so the API answers once that line is out (and /health says "loading model" before).
import { homedir } from "node:os";
import { join } from "node:path";
import { UsageError } from "../loader/errors.js";
import { EngineHost } from "../host/engine-host.js";
import { serve } from "../host/server.js";
import { int, kvCacheFlag, parse, threadsFlag, weightsFlag } from "./flags.js";

export const SERVE_HELP =
  "[--port N (default 8080)] [--host ADDR (default 127.0.0.1)] [--model DIR | --no-model] [--data DIR] [--threads N] [--kv-cache f32|f16] [--weights auto|file|int8|int4]";

/** Conversations and recent models: $HIRE_DATA_DIR, else $XDG_DATA_HOME/hire-studio, else ~/.local/share/hire-studio. */
export function defaultDataDir(): string {
  if (process.env.HIRE_DATA_DIR) return process.env.HIRE_DATA_DIR;
  const base = process.env.XDG_DATA_HOME || join(homedir(), ".local", "share");
  return join(base, "hire-studio");
}

/** Why the server could not listen, as a usage error naming the flag to change; other errors as they are. */
function listenError(e: unknown, port: number, hostname: string | undefined): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE") return new UsageError(`--port ${port}: the port is in use (EADDRINUSE); pick another`);
  if (code === "EACCES") return new UsageError(`--port ${port}: not allowed here (EACCES)`);
  if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND")
    return new UsageError(`--host ${hostname}: not an address of this machine (${code})`);
  return e;
}

export async function cmdServe(argv: string[]): Promise<void> {
  const v = parse(argv, {
    port: { type: "string" },
    host: { type: "string" },
    model: { type: "string" },
    "no-model": { type: "boolean" },
    data: { type: "string" },
    threads: { type: "string" },
    "kv-cache": { type: "string" },
    weights: { type: "string" },
  });
  const host = new EngineHost({
    dataDir: v.data ?? defaultDataDir(),
    threads: threadsFlag(v.threads),
    kvCache: kvCacheFlag(v["kv-cache"]),
    weights: weightsFlag(v.weights),
  });
  const port = int("port", v.port, [0, 65535]) ?? 8080;
  // Listen first: a port in use fails at once, not after a model load (the API answers 503 and
  // /health "loading model" meanwhile).
  let running: Awaited<ReturnType<typeof serve>>;
  try {
    running = await serve({ host, port, hostname: v.host });
  } catch (e) {
    host.close();
    throw listenError(e, port, v.host);
  }
  if (!v["no-model"]) {
    let failure: string | undefined;
    await host.handle({ id: 0, type: "model.load", ...(v.model ? { path: v.model } : {}) }, (m) => {
      if (m.type === "reply" && !m.ok) failure = m.error.message;
    });
    if (failure !== undefined) {
      await running.close();
      host.close();
      throw new UsageError(`cannot load the model: ${failure}`);
    }
  }
  process.stdout.write(`HiRE Studio at ${running.url}  (OpenAI API: ${running.url}/v1/chat/completions)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      void running.close().then(() => {
        host.close();
        resolve();
      });
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
