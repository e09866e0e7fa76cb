// The Electron main process: one window, the menus, and the engine host in a utility process.
// It relays protocol messages between the renderer and the engine, validating every request
// (parseRequest) before it leaves for the engine. If the engine dies the window stays: the UI gets
// `host.crashed` and the next request starts a fresh engine (the UI offers to reload the model).
import { app, BrowserWindow, dialog, ipcMain, Menu, session, shell, utilityProcess } from "electron";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { HostMessage } from "../core/host/protocol.js";
import { EngineRelay, type EngineProcess } from "./relay.js";
import { IPC, secureWebPreferences } from "./security.js";

const HERE = dirname(fileURLToPath(import.meta.url)); // dist/electron
const UI_INDEX = join(HERE, "..", "ui", "index.html");

let win: BrowserWindow | null = null;

function toRenderer(m: HostMessage): void {
  if (win && !win.isDestroyed()) win.webContents.send(IPC.message, m);
}

function startEngine(): EngineProcess {
  const child = utilityProcess.fork(join(HERE, "engine-process.js"), [join(app.getPath("userData"), "data")], {
    serviceName: "HiRE engine",
  });
  return {
    postMessage: (m) => child.postMessage(m),
    onMessage: (cb) => child.on("message", cb),
    onExit: (cb) => child.on("exit", cb),
    kill: () => void child.kill(),
  };
}

const relay = new EngineRelay(startEngine, toRenderer);

async function pickFolder(): Promise<string | null> {
  if (!win) return null;
  // macOS offers folders and .gguf files in one dialog; Windows and Linux show a folder picker, and a
  // folder holding one GGUF file loads that file (modelFolderFor).
  const r = await dialog.showOpenDialog(win, {
    title: "Open a Hugging Face model folder or a GGUF file",
    properties: ["openDirectory", "openFile"],
    filters: [{ name: "GGUF model", extensions: ["gguf"] }],
  });
  return r.canceled || r.filePaths.length === 0 ? null : r.filePaths[0];
}

function createWindow(): void {
  win = new BrowserWindow({
    width: 1440,
    height: 900,
    minWidth: 960,
    minHeight: 600,
    title: "HiRE Studio",
    backgroundColor: "#111318",
    icon: join(HERE, "..", "..", "assets", "icon.png"),
    webPreferences: secureWebPreferences(join(HERE, "preload.cjs")),
  });
  const wc = win.webContents;
  // Navigation and new windows are denied; links to the web open in the user's browser.
  wc.on("will-navigate", (e) => e.preventDefault());
  wc.setWindowOpenHandler(({ url }) => {
    if (url.startsWith("https://")) void shell.openExternal(url);
    return { action: "deny" };
  });
  win.on("closed", () => {
    win = null;
  });
  void win.loadFile(UI_INDEX);
}

function buildMenu(): void {
  const isMac = process.platform === "darwin";
  Menu.setApplicationMenu(
    Menu.buildFromTemplate([
      ...(isMac ? [{ role: "appMenu" as const }] : []),
      {
        label: "File",
        submenu: [
          {
            label: "Open Model…",
            accelerator: "CmdOrCtrl+O",
            click: () =>
              void pickFolder().then((path) => {
                if (path) toRenderer({ type: "app.openModel", path });
              }),
          },
          { type: "separator" },
          isMac ? { role: "close" } : { role: "quit" },
        ],
      },
      { role: "editMenu" },
      {
        label: "View",
        submenu: [{ role: "reload" }, { role: "toggleDevTools" }, { type: "separator" }, { role: "togglefullscreen" }],
      },
      { role: "windowMenu" },
    ]),
  );
}

app.enableSandbox();
app.whenReady().then(() => {
  // Permissions (camera, notifications, …) are denied by default: the app needs none.
  session.defaultSession.setPermissionRequestHandler((_wc, _perm, cb) => cb(false));
  session.defaultSession.setPermissionCheckHandler(() => false);
  // Only our window speaks the protocol.
  ipcMain.on(IPC.request, (e, msg: unknown) => {
    if (win && e.sender === win.webContents) relay.request(msg);
  });
  ipcMain.handle(IPC.pickFolder, (e) => (win && e.sender === win.webContents ? pickFolder() : null));
  buildMenu();
  relay.ensureEngine();
  createWindow();
  app.on("activate", () => {
    if (BrowserWindow.getAllWindows().length === 0) createWindow();
  });
});

app.on("window-all-closed", () => {
  relay.stop();
  if (process.platform !== "darwin") app.quit();
});
