// Encode texts with @huggingface/tokenizers (the library the engine uses), for train.py's parity check.
// Usage: node tools/train/hf_tokenize.mjs TOKENIZER_DIR IN.json OUT.json
//   IN.json: a JSON list of strings. OUT.json: [{ids, decoded}] per string (decoded keeps specials).
// Run from the repository root so @huggingface/tokenizers resolves from its node_modules.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, inFile, outFile] = process.argv.slice(2);
const tok = new Tokenizer(
  JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
  JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
);
const texts = JSON.parse(readFileSync(inFile, "utf8"));
const out = texts.map((t) => {
  const ids = tok.encode(t, { add_special_tokens: false }).ids;
  const decoded = ids.length
    ? tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false })
    : "";
  return { ids, decoded };
});
writeFileSync(outFile, JSON.stringify(out));
