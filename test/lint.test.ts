// The layering rule is enforced by the linter: core/ must not import Electron, React or the app.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { ESLint } from "eslint";
import { REPO_ROOT } from "./helpers.js";

async function lint(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: REPO_ROOT });
  const [result] = await eslint.lintText(code, { filePath: join(REPO_ROOT, file) });
  return result.messages.map((m) => m.ruleId ?? m.message);
}

test("core/ importing electron/, renderer/, electron or react is a lint error", async () => {
  for (const spec of ["../electron/main.js", "../../renderer/store.js", "electron", "react"]) {
    const rules = await lint("core/engine/fake.ts", `import x from "${spec}";\nexport const y = x;\n`);
    assert.ok(rules.includes("no-restricted-imports"), `${spec}: ${rules.join(", ")}`);
  }
});

test("core/ importing core/ and Node built-ins is fine", async () => {
  const rules = await lint(
    "core/engine/fake.ts",
    `import { join } from "node:path";\nimport { Session } from "./session.js";\nexport const y = [join, Session];\n`,
  );
  assert.deepEqual(rules, []);
});
