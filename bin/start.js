#!/usr/bin/env node
// `npm start`: the desktop app on the built-in model. Electron's binary comes from its install
// script; where that could not run (offline machines, CI), serve the same app to a browser instead.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
let electron;
try {
  electron = (await import("electron")).default; // the binary's path; throws when it is missing
} catch (e) {
  process.stderr.write(`Electron is not installed here (${e.message.split("\n")[0]}).\n`);
  process.stderr.write("Serving the same app to your browser instead (Ctrl-C to quit):\n");
}
const [cmd, args] =
  typeof electron === "string" ? [electron, [root]] : [process.execPath, [join(root, "bin", "hire.js"), "serve"]];
const child = spawn(cmd, args, { stdio: "inherit" });
child.on("exit", (code, signal) => process.exit(signal ? 1 : (code ?? 0)));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
