// What the stores need from a transport: send a request (get its id now, its result later) and
// listen to events and to the connection's state. `renderer/src/transport.ts` implements it over
// Electron IPC or a WebSocket; the unit tests implement it with a fake host.
import type { HostErrorInfo, HostEvent, ReplyResults, Request } from "../../../core/host/protocol.js";

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A request without its id: the client numbers requests itself. */
export type RequestBody = DistributiveOmit<Request, "id">;

export type ConnectionStatus = "connecting" | "open" | "reconnecting";

export interface PendingRequest<T extends keyof ReplyResults> {
  /** The id the request was sent with (a generate's id is what `stop` targets). */
  id: number;
  result: Promise<ReplyResults[T]>;
}

export interface HostClient {
  readonly kind: "ipc" | "websocket";
  readonly status: ConnectionStatus;
  send<R extends RequestBody>(req: R): PendingRequest<R["type"]>;
  request<R extends RequestBody>(req: R): Promise<ReplyResults[R["type"]]>;
  onEvent(cb: (ev: HostEvent) => void): () => void;
  onStatus(cb: (status: ConnectionStatus) => void): () => void;
}

/** A failed request: an Error that is also the host's HostErrorInfo (code, message, file). */
export class HostRequestError extends Error implements HostErrorInfo {
  override readonly name = "HostRequestError";
  readonly code: string;
  readonly file?: string;
  constructor(info: HostErrorInfo) {
    super(info.message);
    this.code = info.code;
    if (info.file !== undefined) this.file = info.file;
  }
}

/** Any thrown value as a HostErrorInfo (what the error box shows). */
export function errorInfo(e: unknown, fallbackCode = "INTERNAL"): HostErrorInfo {
  if (typeof e === "object" && e !== null && typeof (e as HostErrorInfo).code === "string") {
    const x = e as HostErrorInfo;
    return x.file === undefined
      ? { code: x.code, message: x.message }
      : { code: x.code, message: x.message, file: x.file };
  }
  return { code: fallbackCode, message: e instanceof Error ? e.message : String(e) };
}
