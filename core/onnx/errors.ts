// Typed errors of the ONNX Runtime path, next to core/loader/errors.ts's: a caller (the bench, a
// peer) can tell "this machine cannot run it" (skip with a reason) from a bug (fail).

export type OrtErrorCode =
  | "ORT_MISSING" // onnxruntime-node cannot be loaded (not installed, no binary for this platform)
  | "EP_UNAVAILABLE" // the requested execution provider (cuda, webgpu) is not usable here
  | "SESSION_FAILED"; // ONNX Runtime rejected the graph or could not run it

export class OrtError extends Error {
  override readonly name = "OrtError";
  constructor(
    readonly code: OrtErrorCode,
    detail: string,
  ) {
    super(detail);
  }
}
