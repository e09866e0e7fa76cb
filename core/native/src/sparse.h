// The HiRE sparse-inference ops on raw pointers (arguments validated by addon.cc), composed from the
// active KernelTable in sparse_ops.cc (threading, x quantization) and topk.cc:
//   score all rows cheaply (quantize once, quant_matvec per token) -> approximate top-k' (topk) ->
//   exact rows (matvec_rows) -> exact top-k -> down projection from k columns (accumulate_cols).
// To add an op: declare it here, implement it in sparse_ops.cc (primitives in the kernel files),
// bind it in addon.cc and declare it in addon.ts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "dtype.h"
#include "kernel_table.h"
#include "kernels.h"
#include "quant.h"

namespace hire {

// Writes the logical matrix of w into dst (rows * cols * dtype_size bytes) in memory layout
// [rows][cols] (transposed = false) or [cols][rows] (true). Parallel. A kQ8 / kQ4 w is written as bf16
// (relayout_dtype): HiRE's transposed W_down and DIP's column copies read single columns, which
// int8 groups along a row cannot give.
void relayout(const Mat& w, bool transposed, unsigned char* dst);
inline int relayout_dtype(int dtype) { return is_quant(dtype) ? kBF16 : dtype; }
// dst = the rows of a and b (same dtype, group and shape, not transposed) interleaved: a[0], b[0],
// a[1], ... Parallel.
void interleave_rows(const Mat& a, const Mat& b, unsigned char* dst);
// y[i] = W[idx[i]] . x for i < count; W not transposed, every idx in [0, rows).
void matvec_rows(float* y, const float* x, const Mat& w, const int32_t* idx, int64_t count);
// y[0..rows) = sum_{i < count} a[i] * W[:, idx[i]]; W transposed, every idx in [0, cols); idx =
// nullptr means columns 0 .. count-1 (the transposed GEMV). The same bits on any thread count.
void accumulate_cols(float* y, const float* a, const Mat& w, const int32_t* idx, int64_t count);
// ---- kQ8 / kQ4 weights (dtype.h, quant.h) ----
// Logical rows [r0, r0 + n) of a QuantMatrix as f32, row after row (cols values each).
void quant_dequant_rows(const QuantMatrix& q, int64_t r0, int64_t n, float* dst);
// x quantized to int8 in q's groups for quant_gemv, in the calling thread's own scratch (valid until
// its next call here): what every product with a kQ8 / kQ4 weight multiplies, as llama.cpp's Q8_0
// and Q4_0 dot products do.
QuantVector quant_input(const float* x, const QuantMatrix& q);
// K.gemv_rows, or for a quantized w each selected row by quant_gemv (the bits its matmul gives that row).
void gemv_rows_any(const KernelTable& K, const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1,
                   float* y, float* scratch);

// Row r of q from its signed codes (padded values, int8; -128..127, or -8..7 for int4), its scales
// already written: the layout quant.h describes.
void pack_codes(QuantMatrix& q, int64_t r, const int8_t* codes);
// Group-wise symmetric quantization of the logical rows of w (either layout); bits 4 or 8, group a
// multiple of 32. Parallel.
std::shared_ptr<QuantMatrix> quantize(const Mat& w, int bits, int64_t group);
// y[r] ~= W[r] . x for every row (x quantized to int8 per group once per call).
void quant_matvec(float* y, const float* x, const QuantMatrix& q);
// out[c] = dequantized W[r][c] for c < cols.
void quant_row(const QuantMatrix& q, int64_t r, float* out);
// How many indices topk returns: sum over shards of min(k_s, shard size).
int64_t topk_count(int64_t n, int64_t k, int64_t shards);
// DA-top-k (see addon.ts): writes topk_count(n, k, shards) ascending indices to out, returns that count.
int64_t topk(const float* values, int64_t n, int64_t k, bool by_abs, int64_t shards, int32_t* out);
// Shard s of topk's `shards` over n values: [lo, lo + m), keeping ks of them.
void topk_shard_range(int64_t n, int64_t k, int64_t shards, int64_t s, int64_t* lo, int64_t* m, int64_t* ks);
// One shard on the calling thread: the top ks of values[lo, lo + m) as ascending indices (from lo).
void topk_shard(const float* values, int64_t lo, int64_t m, int64_t ks, bool by_abs, int32_t* out);

// One decode token through a HiRE FFN as DA-top-k shards (see hire_ffn).
struct HireFfnStep {
  // Inputs.
  const float* x;               // [pred->cols]
  const QuantMatrix* pred;      // predictor of the first FFN matrix, F rows
  const float* bias_in;         // [F] bias of the first matrix, or null
  Mat rows;                     // not transposed: W_gate/W_up interleaved [2F] (gated) or W_in [F]
  bool gated;
  Activation act;
  Mat down;                     // W_down transposed (memory [F][out])
  int64_t k, kp, shards;        // kp: a multiple of shards, or >= F (every neuron is a candidate)
  // Outputs.
  float* y;                     // [down.rows]
  float* scores;                // [F] act(approximate score)
  int32_t* cand;                // [topk_count(F, kp, shards)] candidates, ascending
  int32_t* sel;                 // [k] selected neurons, ascending
  float* a_sel;                 // [k] their activations
  int64_t n_cand = 0, n_sel = 0;
  double ms[3] = {0, 0, 0};     // scoring + top-k', exact rows + top-k, down product (wall-time share)
};
// shards >= 2: every shard runs on one task from start to finish, with no barrier and no global sort
// in between: score its neurons, keep its top-kp/P by |act(score)|, compute those rows exactly, keep
// its top-k/P by |activation|, and sum its k/P down columns into a partial output; y = the partials
// summed in shard order. Selections equal topk(..., shards) over quant_matvec and matvec_rows; y
// differs from one accumulate_cols over every selected column only in the order of the additions.
// shards = 1: those steps with global selections, each parallel inside; y is accumulate_cols' bits.
void hire_ffn(HireFfnStep& step);

// Several independent steps at once (a mixture layer's routed experts, small FFNs): each runs start
// to finish on one worker with the global selections of shards = 1, the steps spread over the pool,
// so a layer costs one dispatch instead of three per step. Every step's selections and y are
// hire_ffn's bit for bit (its P = 1 steps, serially: topk's selection, accumulate_cols' sums). Each
// step's ms are its share of the wall time (its own time over the workers), so they add up across steps.
void hire_ffn_batch(HireFfnStep* const* steps, int64_t n);

// HiRE on the output layer in one op (Backend.hireHead): logits = the exact logits of the top-k of
// the top-kp predicted tokens (per shard when shards >= 2, as topk(..., shards) picks them), -inf
// elsewhere. The same selections and logits as quant_matvec, topk, matvec_rows and topk in turn.
struct HireHeadStep {
  const float* x;           // [pred->cols]
  const QuantMatrix* pred;  // predictor of the head, V rows
  Mat head;                 // not transposed [V][hidden]
  int64_t k, kp, shards;    // kp: a multiple of shards, or >= V
  float* logits;            // [V]
  float* scores;            // [V] approximate logits
  int64_t n_cand = 0, n_sel = 0;
};
void hire_head(HireHeadStep& step);

}  // namespace hire
