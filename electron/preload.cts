// The only thing the sandboxed renderer can reach: send a protocol request, receive host messages,
// and ask for the folder dialog. CommonJS (.cts) because sandboxed preloads cannot be ES modules.
// Every request is validated again in the main process; this file trusts nothing it forwards.
import { contextBridge, ipcRenderer, type IpcRendererEvent } from "electron";

// Inlined (not imported from security.ts): a sandboxed preload can only require "electron".
const IPC = { request: "hire:request", message: "hire:message", pickFolder: "hire:pick-folder" } as const;

contextBridge.exposeInMainWorld("hireBridge", {
  send(msg: unknown): void {
    ipcRenderer.send(IPC.request, msg);
  },
  onMessage(cb: (m: unknown) => void): () => void {
    const listener = (_e: IpcRendererEvent, m: unknown) => cb(m);
    ipcRenderer.on(IPC.message, listener);
    return () => ipcRenderer.off(IPC.message, listener);
  },
  pickModelFolder(): Promise<string | null> {
    return ipcRenderer.invoke(IPC.pickFolder) as Promise<string | null>;
  },
});
