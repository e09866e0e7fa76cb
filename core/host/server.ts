// `hire serve`: the engine host over HTTP. It serves the built renderer (dist/ui), speaks the host
// protocol over a WebSocket at /ws (the same messages Electron carries over IPC), and answers an
// OpenAI-compatible POST /v1/chat/completions whose chunks carry the sparsity statistics in an
// extra `hire` field. Bound to 127.0.0.1 unless told otherwise; WebSocket upgrades from another
// origin are refused so a web page cannot drive a local model.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer, type WebSocket } from "ws";
import { EngineHost, type Channel } from "./engine-host.js";
import { decodeWire, encodeWire, rejection, type HostMessage } from "./protocol.js";
import { handleChatCompletions, handleHealth, handleModels, handleTextCompletions } from "./openai.js";

export interface ServeOptions {
  host: EngineHost;
  port: number;
  /** Interface to bind (default 127.0.0.1: this machine only). */
  hostname?: string;
  /** The built renderer (default: dist/ui next to the compiled core). */
  uiDir?: string;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** dist/core/host/server.js → dist/ui. */
export const DEFAULT_UI_DIR = join(HERE, "..", "..", "ui");

const MAX_WS_MESSAGE = 64 * 1024 * 1024;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".woff2": "font/woff2",
};

// The renderer loads only its own files and talks only to this server.
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
  "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

export async function serve(o: ServeOptions): Promise<RunningServer> {
  const uiDir = o.uiDir ?? DEFAULT_UI_DIR;
  const hostname = o.hostname ?? "127.0.0.1";
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE });
  const server = createServer((req, res) => {
    route(o.host, uiDir, req, res).catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`internal error: ${(e as Error).message}`);
    });
  });
  server.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname !== "/ws" || !sameOrigin(req)) {
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => connect(o.host, ws));
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once("error", reject);
    server.listen(o.port, hostname, () => resolveListen());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : o.port;
  return {
    server,
    url: `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`,
    close: () =>
      new Promise<void>((done) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

/** Browsers send Origin on WebSocket upgrades; only pages served by this server may connect. */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true; // not a browser (CLI clients, tests)
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function connect(host: EngineHost, ws: WebSocket): void {
  const channel: Channel = (m: HostMessage) => {
    if (ws.readyState === ws.OPEN) ws.send(encodeWire(m));
  };
  host.subscribe(channel);
  ws.on("message", (data, isBinary) => {
    let msg: unknown;
    try {
      if (isBinary) throw new Error("binary frames are not part of the protocol");
      msg = decodeWire(data.toString());
    } catch (e) {
      channel(rejection(undefined, e));
      return;
    }
    void host.handle(msg, channel);
  });
  ws.on("close", () => host.disconnect(channel));
  ws.on("error", () => host.disconnect(channel));
}

async function route(host: EngineHost, uiDir: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/v1/chat/completions") return handleChatCompletions(host, req, res);
  if (url.pathname === "/v1/completions") return handleTextCompletions(host, req, res);
  if (url.pathname === "/v1/models") return handleModels(host, req, res);
  if (url.pathname === "/health") return handleHealth(host, req, res);
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  serveStatic(uiDir, url.pathname, res);
}

function serveStatic(uiDir: string, pathname: string, res: ServerResponse): void {
  const index = join(uiDir, "index.html");
  if (!existsSync(index)) {
    res.writeHead(503, { "content-type": "text/plain; charset=utf-8" });
    res.end(`The app is not built (${index} is missing): run \`npm run build:ui\`.\n`);
    return;
  }
  let rel: string;
  try {
    rel = decodeURIComponent(pathname);
  } catch {
    res.writeHead(400).end();
    return;
  }
  const file = normalize(join(uiDir, rel === "/" ? "index.html" : rel));
  if (!file.startsWith(normalize(uiDir) + sep) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    return;
  }
  res.writeHead(200, {
    "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
  });
  res.end(readFileSync(file));
}
