// Between the renderer and the engine process: every request is validated here before it is
// forwarded; replies are tracked so that if the engine dies each unanswered request still gets an
// answer (an error) and the UI hears `host.crashed`; the next request starts a fresh engine.
// No Electron import: the main process hands in how to start an engine and how to reach the window.
import { parseRequest, rejection, type HostMessage } from "../core/host/protocol.js";

/** What the relay needs of an engine process (Electron's UtilityProcess, or a Node child process). */
export interface EngineProcess {
  postMessage(m: unknown): void;
  onMessage(cb: (m: HostMessage) => void): void;
  onExit(cb: (code: number | null) => void): void;
  kill(): void;
}

export class EngineRelay {
  private engine: EngineProcess | null = null;
  private readonly pending = new Set<number>();

  constructor(
    private readonly start: () => EngineProcess,
    private readonly toRenderer: (m: HostMessage) => void,
  ) {}

  /** A message from the renderer: forwarded if it is a valid request, else answered with an error. */
  request(raw: unknown): void {
    let req;
    try {
      req = parseRequest(raw);
    } catch (e) {
      this.toRenderer(rejection(raw, e));
      return;
    }
    this.ensureEngine();
    this.pending.add(req.id);
    this.engine!.postMessage(req);
  }

  ensureEngine(): void {
    if (this.engine) return;
    const child = this.start();
    this.engine = child;
    child.onMessage((m) => {
      if (m.type === "reply") this.pending.delete(m.id);
      this.toRenderer(m);
    });
    child.onExit((code) => {
      if (this.engine !== child) return;
      this.engine = null;
      const message = `the engine stopped (exit code ${code}); load a model to start it again`;
      for (const id of this.pending)
        this.toRenderer({ type: "reply", id, ok: false, error: { code: "ENGINE_CRASHED", message } });
      this.pending.clear();
      this.toRenderer({ type: "host.crashed", message });
    });
  }

  stop(): void {
    const e = this.engine;
    this.engine = null;
    e?.kill();
  }
}
