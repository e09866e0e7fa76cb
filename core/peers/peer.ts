// A peer is another inference engine run on the same model in the same benchmark (issue 6):
// ONNX Runtime (dense and HiRE graphs) and llama.cpp through node-llama-cpp. Our speed claims
// are ratios against these, measured side by side, so every peer answers the same two questions:
// how fast does it decode greedily, and which tokens did it pick (to check it ran the same model).

export interface PeerRun {
  /** Greedy ids generated after the prompt (length = nTokens unless the peer stopped early). */
  ids: number[];
  /** Decode speed, tokens/s, excluding prefill and any load/compile time. */
  tokensPerSecond: number;
  /** Prompt processing speed, tokens/s, when the peer reports it separately. */
  prefillTokensPerSecond?: number;
}

export interface Peer {
  /** Row name in `hire bench`, e.g. "ort", "ort-hire", "llamacpp". */
  readonly name: string;
  /** Human-readable detail for the bench table (execution provider, weight dtype, threads). */
  readonly detail: string;
  /** Greedy decode of nTokens after promptIds; fresh context each call. */
  decode(promptIds: number[], nTokens: number): Promise<PeerRun>;
  /**
   * Teacher-forced: the peer's greedy pick after promptIds and after each of ids but the last, fed
   * our ids instead of its own (one pick per id). Free-running greedy ids part for good at the first
   * near-tie two engines round differently; this says whether each step picks what ours did.
   */
  follow?(promptIds: number[], ids: number[]): Promise<number[]>;
  close(): Promise<void>;
}

/** A peer that cannot run on this machine says why instead of failing the benchmark. */
export type PeerOpenResult = { peer: Peer } | { skipped: string };
