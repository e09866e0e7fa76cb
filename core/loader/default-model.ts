// The built-in default model: assets/models/<name>, named by assets/models/DEFAULT. The CLI (and
// later the app) use it when no model folder is given.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "./errors.js";

// core/loader/ in the sources, dist/core/loader/ when compiled: both sit under the repository root.
const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = existsSync(join(HERE, "..", "..", "assets")) ? join(HERE, "..", "..") : join(HERE, "..", "..", "..");
// In a packaged app the models sit beside the asar archive (the native loader opens them as plain
// files, which asar cannot serve).
const MODELS_DIR = join(REPO_ROOT, "assets", "models").replace(`app.asar${sep}`, `app.asar.unpacked${sep}`);

/** The built-in model: assets/models/<name>, with <name> from assets/models/DEFAULT when there are several. */
export function defaultModelDir(): string {
  const named = join(MODELS_DIR, "DEFAULT");
  if (existsSync(named)) return join(MODELS_DIR, readFileSync(named, "utf8").trim());
  const found = existsSync(MODELS_DIR)
    ? readdirSync(MODELS_DIR).filter((d) => existsSync(join(MODELS_DIR, d, "config.json")))
    : [];
  if (found.length > 0) return join(MODELS_DIR, found.sort()[0]);
  throw new UsageError(
    "no --model given and no built-in model in assets/models/ yet. Pass a Hugging Face model folder with --model DIR, " +
      "or make a random one: hire make-model --arch llama --preset smollm2-135m --dtype bf16 --seed 1 --out models/smollm2",
  );
}
