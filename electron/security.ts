// The window's security settings, in one place so a test can hold them to the rules: the renderer
// is a web page with no Node, isolated from the preload, in Chromium's sandbox; it may talk only to
// the narrow bridge the preload exposes, navigate nowhere and open nothing.
import type { WebPreferences } from "electron";

export function secureWebPreferences(preload: string): WebPreferences {
  return {
    preload,
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    experimentalFeatures: false,
    webviewTag: false,
    spellcheck: false,
  };
}

/** Channels between preload and main; nothing else is listened to. */
export const IPC = {
  request: "hire:request",
  message: "hire:message",
  pickFolder: "hire:pick-folder",
} as const;
