// int8 / int4 weights straight from a GGUF file's blocks. An import keeps every matrix as bf16, which
// rounds a Q8_0 value (an 8-bit code times an 11-bit f16 scale) to 8 significant bits; quantizing that
// again changes some codes and most scales a little, and a 4-bit file's matrices would take twice
// their bytes as int8. Q8_0, Q4_0 and Q5_0 blocks are groups of 32 with an f16 scale, the very layout
// of our int8 weights (and Q4_0 of int4), and Q4_1 / Q4_K blocks are int4 groups of 32 with a scale
// and a minimum (Q4M), so a model loaded with quantized weights takes those matrices from the file
// itself (native quantizeGguf) and multiplies the values llama.cpp does (Q4_K's sub-block scales and
// mins rounded once to f16). The import records which matrices qualify (BlockTensor in
// gguf-import.json); every other matrix is quantized from the import's bf16 as before. A symmetric
// 4-bit GPTQ checkpoint's codes are Q4_0 blocks too: its import writes them to a file of their own
// (core/loader/quantized-import.ts), read here the same way.
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { native, type NativeWeight } from "../native/addon.js";
import type { Weight, WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import { blockFit } from "../loader/weight-format.js";
import { IMPORT_RECORD, unpermutedRowOrder, type BlockTensor, type ImportRecord } from "./import.js";
import { ggmlTypeName } from "./quants.js";

/**
 * Of the `of` matrices a load quantized, those taken from blocks, by ggml type ({Q8_0: 113}), and
 * whose blocks they were ("the GGUF's").
 */
export interface BlockCount {
  taken: Record<string, number>;
  of: number;
  from: string;
}

/** Makes a matrix's int8 (bits 8) or int4 copy from the recorded blocks, or says it cannot (undefined). */
export interface BlockCopies {
  (w: Weight, bits: 4 | 8): NativeWeight | undefined;
  /** The fewest bits a copy of w from its blocks can have (4 for Q4_0, Q4_1, Q4_K; 8 for Q8_0, Q5_0), or undefined without blocks. */
  bitsOf(w: Weight): 4 | 8 | undefined;
  readonly count: BlockCount;
}

/**
 * Where a model's quantized weights came from: "from BF16" (the file's dtype), or with matrices taken
 * from blocks "from the GGUF's Q8_0 blocks" (all of them) or "from BF16, 3 of 16 from the GGUF's
 * Q4_0/Q5_0/Q8_0 blocks".
 */
export function quantizedFrom(dtype: string, blocks: BlockCount | undefined): string {
  const types = Object.keys(blocks?.taken ?? {})
    .sort()
    .join("/");
  if (!blocks || !types) return `from ${dtype}`;
  const taken = Object.values(blocks.taken).reduce((a, n) => a + n, 0);
  return taken === blocks.of
    ? `from ${blocks.from} ${types} blocks`
    : `from ${dtype}, ${taken} of ${blocks.of} from ${blocks.from} ${types} blocks`;
}

/**
 * Blocks that int8 / int4 weights can take matrices from, as an import recorded them: a GGUF
 * import's source file (ggufBlockSource), or the Q4_0 blocks a quantized checkpoint's import wrote
 * (core/loader/quantized-import.ts).
 */
export interface BlockSource {
  /** The file holding the blocks, with its size and modification time when the record was written. */
  readonly file: string;
  readonly size?: number;
  readonly mtimeMs?: number;
  /** The matrices (by Hugging Face name) whose blocks the file holds. */
  readonly blocks: Readonly<Record<string, BlockTensor>>;
  /** The record that lists them, named by errors. */
  readonly record: string;
  /** Whose blocks they are, for quantizedFrom ("the GGUF's"). */
  readonly from: string;
}

/** A GGUF import's blocks: its source file's, as its IMPORT_RECORD (`record`) lists them. */
export function ggufBlockSource(dir: string, record: ImportRecord | undefined): BlockSource | undefined {
  return record && { ...record, record: join(dir, IMPORT_RECORD), from: "the GGUF's" };
}

/**
 * The copies `source`'s matrices can have when its file is still there unchanged (size and
 * modification time as recorded). undefined for no source, or a file moved or changed: every
 * matrix is then quantized from the folder's tensors.
 */
export function blockCopies(source: BlockSource | undefined, store: WeightStore): BlockCopies | undefined {
  if (!source || !existsSync(source.file)) return undefined;
  const st = statSync(source.file);
  if (st.size !== source.size || st.mtimeMs !== source.mtimeMs) return undefined;
  const n = native();
  const count: BlockCount = { taken: {}, of: 0, from: source.from };
  // The recorded blocks of w, when w is their whole matrix as recorded (not a view of part of a
  // tensor, such as a fused checkpoint's rows).
  const blocksOf = (w: Weight): BlockTensor | undefined => {
    const b = source.blocks[w.name];
    if (!b || w.transposed || w.rows !== b.rows || w.cols !== b.cols) return undefined;
    return w.offset === store.info(w.name).offset ? b : undefined;
  };
  const copy = (w: Weight, bits: 4 | 8): NativeWeight | undefined => {
    count.of++;
    const b = blocksOf(w);
    if (!b || !blockFit(ggmlTypeName(b.type))?.bits.includes(bits)) return undefined;
    const order = b.unpermute ? unpermutedRowOrder(b.unpermute.heads, b.unpermute.headDim) : null;
    let q: NativeWeight;
    try {
      q = n.quantizeGguf(store.sourceMapping(source.file), b.offset, b.type, b.rows, b.cols, bits, order);
    } catch (e) {
      // A record that does not fit its file (edited, or the file replaced by one of the same size and time).
      throw new ModelError(
        "BAD_GGUF",
        source.record,
        `its blocks of ${w.name} cannot be read from ${source.file} (${(e as Error).message}); ` +
          `delete ${dirname(source.record)} to import the model again`,
        w.name,
      );
    }
    count.taken[ggmlTypeName(b.type)] = (count.taken[ggmlTypeName(b.type)] ?? 0) + 1;
    return q;
  };
  const bitsOf = (w: Weight) => {
    const b = blocksOf(w);
    return b && blockFit(ggmlTypeName(b.type))?.bits[0];
  };
  return Object.assign(copy, { count, bitsOf });
}
