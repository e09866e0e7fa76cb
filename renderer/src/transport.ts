// The renderer's link to the engine host. It never knows which one it runs on:
// - Electron: the preload exposes `window.hireBridge` (structured clone, typed arrays intact);
// - a browser (`hire serve`): a WebSocket to `/ws` on the same host, speaking encodeWire/decodeWire
//   text frames, reconnecting with backoff (the UI shows "disconnected, reconnecting").
import { decodeWire, encodeWire } from "../../core/host/protocol.js";
import type { HostEvent, HostMessage, ReplyResults, Request } from "../../core/host/protocol.js";
import {
  HostRequestError,
  type ConnectionStatus,
  type HostClient,
  type PendingRequest,
  type RequestBody,
} from "./state/client.js";

/** What Electron's preload puts on `window` (see electron/preload). */
export interface HireBridge {
  send(msg: Request): void;
  onMessage(cb: (m: HostMessage) => void): () => void;
  /** Optional, Electron only: a native folder picker; resolves to null when cancelled. */
  pickModelFolder?: () => Promise<string | null>;
}

declare global {
  interface Window {
    hireBridge?: HireBridge;
  }
}

type Waiter = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

abstract class BaseClient implements HostClient {
  abstract readonly kind: "ipc" | "websocket";
  status: ConnectionStatus = "connecting";
  private nextId = 1;
  private readonly waiting = new Map<number, Waiter>();
  private readonly eventListeners = new Set<(ev: HostEvent) => void>();
  private readonly statusListeners = new Set<(s: ConnectionStatus) => void>();

  /** Put a request on the wire; false when it cannot be sent now. */
  protected abstract post(req: Request): boolean;

  send<R extends RequestBody>(body: R): PendingRequest<R["type"]> {
    const id = this.nextId++;
    const req = { ...body, id } as Request;
    const result = new Promise<ReplyResults[R["type"]]>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    if (!this.post(req)) {
      this.waiting.delete(id);
      return {
        id,
        result: Promise.reject(
          new HostRequestError({ code: "DISCONNECTED", message: "Not connected to the engine; reconnecting." }),
        ),
      };
    }
    return { id, result };
  }

  request<R extends RequestBody>(body: R): Promise<ReplyResults[R["type"]]> {
    return this.send(body).result;
  }

  onEvent(cb: (ev: HostEvent) => void): () => void {
    this.eventListeners.add(cb);
    return () => this.eventListeners.delete(cb);
  }

  onStatus(cb: (s: ConnectionStatus) => void): () => void {
    this.statusListeners.add(cb);
    return () => this.statusListeners.delete(cb);
  }

  protected setStatus(s: ConnectionStatus): void {
    if (this.status === s) return;
    this.status = s;
    for (const cb of this.statusListeners) cb(s);
  }

  protected receive(msg: unknown): void {
    if (typeof msg !== "object" || msg === null || typeof (msg as { type?: unknown }).type !== "string") {
      console.warn("hire: ignoring a malformed host message", msg);
      return;
    }
    const m = msg as HostMessage;
    if (m.type === "reply") {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new HostRequestError(m.error));
      return;
    }
    for (const cb of this.eventListeners) {
      try {
        cb(m);
      } catch (e) {
        console.error("hire: event handler failed", e);
      }
    }
  }

  /** The link dropped: every request still waiting fails (the host may never answer it). */
  protected failAll(message: string): void {
    const err = new HostRequestError({ code: "DISCONNECTED", message });
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }
}

export class BridgeClient extends BaseClient {
  readonly kind = "ipc" as const;
  constructor(private readonly bridge: HireBridge) {
    super();
    bridge.onMessage((m) => this.receive(m));
    this.status = "open";
  }
  protected post(req: Request): boolean {
    this.bridge.send(req);
    return true;
  }
}

export class WebSocketClient extends BaseClient {
  readonly kind = "websocket" as const;
  private ws: WebSocket | null = null;
  private retryMs = 250;
  private timer: number | null = null;

  constructor(private readonly url: string) {
    super();
    this.connect();
  }

  private connect(): void {
    this.timer = null;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 250;
      this.setStatus("open");
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data !== "string") return;
      let msg: unknown;
      try {
        msg = decodeWire(e.data);
      } catch (err) {
        console.warn("hire: undecodable frame", err);
        return;
      }
      this.receive(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll("The connection to the engine closed.");
      this.setStatus("reconnecting");
      this.timer = window.setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(5000, this.retryMs * 2);
    };
    // An error is always followed by close, which reconnects.
    ws.onerror = () => undefined;
  }

  protected post(req: Request): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(encodeWire(req));
    return true;
  }

  close(): void {
    if (this.timer !== null) window.clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }
}

/** The WebSocket URL of `hire serve` for this page. */
export function defaultSocketUrl(loc: Location = window.location): string {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/** IPC when the Electron preload is there, else the WebSocket of the serving host. */
export function connect(): HostClient {
  return window.hireBridge ? new BridgeClient(window.hireBridge) : new WebSocketClient(defaultSocketUrl());
}
