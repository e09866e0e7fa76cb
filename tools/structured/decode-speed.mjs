// Decode speed with and without a JSON schema, dense and HiRE + head, on one model:
// `npm run build:ts && node tools/structured/decode-speed.mjs MODEL_DIR`. Where the grammar allows at
// most 1024 tokens next (structure, numbers, enums), the output layer reads only their rows.
import { loadModel } from "../../dist/core/loader/model-folder.js";
import { Session } from "../../dist/core/engine/session.js";
import { compileSchema } from "../../dist/core/structured/schema.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: node tools/structured/decode-speed.mjs MODEL_DIR");
const model = loadModel(dir);
const schema = compileSchema({
  type: "object",
  properties: {
    id: { type: "integer", minimum: 0, maximum: 999 },
    ok: { type: "boolean" },
    tags: { type: "array", items: { enum: ["a", "b", "c"] }, maxItems: 4 },
    score: { type: "number", minimum: 0, maximum: 1 },
  },
  required: ["id", "ok", "tags", "score"],
});
const session = new Session(model);
for (const sparse of [false, true]) {
  if (sparse)
    session.sparsity.update({
      ffn: { method: "hire", k: 0.1, oversample: 2, predictor: { kind: "int4", groupSize: 128 } },
      head: { method: "hire" },
    });
  // Two rounds, the first a warm-up; free text and the schema alternate.
  for (const round of [0, 1])
    for (const [name, grammar] of [
      ["free", undefined],
      ["schema", schema],
    ]) {
      let done;
      let rows = 0;
      const options = { maxTokens: 40, temperature: 0, grammar, ignoreEos: !grammar };
      for await (const ev of session.generate("Data:", options)) {
        if (ev.type === "token" && ev.report.head?.method === "grammar") rows++;
        if (ev.type === "done") done = ev;
      }
      if (round === 1)
        console.log(
          `${sparse ? "hire+head" : "dense"} ${name.padEnd(6)} ${done.decodeTokensPerS.toFixed(2)} tokens/s` +
            ` (${done.ids.length} tokens, ${rows} with the allowed rows only)`,
        );
    }
}
model.close();
