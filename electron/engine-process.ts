// The engine host in its own process: a crash or out-of-memory here ends this process, not the
// window. Under Electron it runs as a utility process (messages on process.parentPort); under
// plain Node as a forked child (process.send), which is how the tests run it. argv[2] is the data
// folder (conversations, recent models). Requests arrive already validated by the relay.
import { EngineHost, type Channel } from "../core/host/engine-host.js";

const dataDir = process.argv[2];
if (!dataDir) throw new Error("engine process: no data folder given");
const host = new EngineHost({ dataDir });

let channel: Channel;
// process.parentPort exists only in an Electron utility process.
const parentPort = (process as { parentPort?: Electron.ParentPort }).parentPort;
if (parentPort) {
  channel = (m) => parentPort.postMessage(m);
  parentPort.on("message", (e) => void host.handle(e.data, channel));
} else if (process.send) {
  channel = (m) => process.send!(m);
  process.on("message", (m) => void host.handle(m, channel));
  process.on("disconnect", () => process.exit(0));
} else {
  throw new Error("engine process: start it from the app (utility process) or with child_process.fork");
}
host.subscribe(channel);

// `npm start` opens on the built-in model; the UI learns of it from `hello` or `model.loaded`.
void host.handle({ id: 0, type: "model.load" }, () => {});
