// Typed errors for everything a user can hand the loader. Each names the file (and tensor, when
// there is one) so the message alone tells the user what to fix. The CLI maps them to exit code 2.

export type ModelErrorCode =
  | "NOT_FOUND" // folder or required file missing
  | "NOT_A_DIRECTORY"
  | "BAD_JSON" // unreadable, non-UTF-8, oversized or malformed JSON
  | "BAD_CONFIG" // config.json parses but lacks or contradicts a needed field
  | "UNSUPPORTED_ARCHITECTURE"
  | "NO_WEIGHTS" // no *.safetensors in the folder
  | "BAD_HEADER" // safetensors header malformed, oversized or not UTF-8
  | "TRUNCATED" // file shorter than its header says
  | "OFFSET_OUT_OF_RANGE" // tensor offsets point past the data section
  | "MISSING_TENSOR"
  | "SHAPE_MISMATCH" // tensor shape disagrees with config.json
  | "DTYPE_MISMATCH" // tensor dtype disagrees with config.json torch_dtype
  | "UNSUPPORTED_DTYPE"
  | "UNSUPPORTED_QUANTIZATION" // a checkpoint quantized for another engine (HQQ, EETQ, 2-3 bit GPTQ, ...)
  | "BAD_TOKENIZER"
  | "BAD_GGUF" // a GGUF file's header, metadata or tensor table is malformed or unsupported
  | "BAD_CHECKPOINT" // a PyTorch checkpoint (torch.save zip and pickle) is malformed or not a state dict
  | "NO_SPACE" // the disk an import or export writes to is (or would be) full
  | "CANNOT_WRITE" // an import or export's destination is read-only, forbidden or not a folder
  | "NOT_FINITE"; // the weights gave NaN (or no finite) logits: values in a file are NaN or inf

export class ModelError extends Error {
  override readonly name = "ModelError";
  constructor(
    readonly code: ModelErrorCode,
    readonly file: string,
    detail: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor ? ` [${tensor}]` : ""}: ${detail}`);
  }
}

/** The prompt (or prompt + generation) does not fit in the session's context window. */
export class ContextOverflowError extends Error {
  override readonly name = "ContextOverflowError";
  constructor(
    readonly needed: number,
    readonly capacity: number,
    detail: string,
  ) {
    super(`${detail}: needs ${needed} positions, the context holds ${capacity}`);
  }
}

/**
 * The chat template raised while rendering a conversation (`raise_exception`, as Gemma 2's does for a
 * system message or Mistral's for roles that do not alternate). The model is fine; this conversation
 * is not one its template accepts.
 */
export class ChatTemplateError extends Error {
  override readonly name = "ChatTemplateError";
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: the chat template refused this conversation: ${detail}`);
  }
}

/** Bad options from a caller (CLI flags, API arguments). */
export class UsageError extends Error {
  override readonly name = "UsageError";
}
