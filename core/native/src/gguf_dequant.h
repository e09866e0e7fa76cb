// GGUF tensor data (ggml's block-quantized types) to f32 / f16 / bf16: see gguf_dequant.cc.
#pragma once
#include <cstdint>
#include <memory>

#include "quant.h"

namespace hire {

// Values and bytes per block of ggml type `type`; false for a type this file does not read.
bool gguf_block_shape(int type, int& values, int& bytes);

// n values of ggml type `type` at src (whole blocks, checked by the caller) into dst as out_dtype
// (DType: kF32, kF16 or kBF16), on the thread pool.
void gguf_dequantize(int type, const uint8_t* src, int64_t n, int out_dtype, void* dst);

// Whether gguf_quantize writes ggml `type` (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K).
bool gguf_quantizes(int type);
// n floats (whole blocks: 32 values, Q4_K / Q6_K 256) as blocks of ggml `type` at out (GGUF export). Q8_0,
// Q4_0 and Q5_0 as ggml's quantize_row_*_ref make them, the codes always from the unrounded d, which is
// stored as f16:
//   Q8_0: d = max|x| / 127, codes roundf(x / d);
//   Q4_0: d = (the value of largest magnitude) / -8, nibbles min(15, trunc(x / d + 8.5));
//   Q5_0: the same with d = max / -16, codes min(31, trunc(x / d + 16.5)), fifth bits in qh.
// Q4_K by our own fit (gguf_dequant.cc: least squares per sub-block, no weighted search as
// llama-quantize does), the codes against the stored 6-bit scales and mins; Q6_K with each 16
// values' scale from their largest magnitude, stored as int8 multiples of d. Parallel.
void gguf_quantize(int type, const float* x, int64_t n, uint8_t* out);

// The quantized weight dtype (dtype.h) that holds ggml `type`'s blocks with `bits`-bit codes in groups
// of 32, or -1: Q8_0, Q4_0 and Q5_0 as int8 (kQ8: their codes -127..127, -8..7 and -16..15 times the
// block's f16 d), Q4_0 as int4 (kQ4: its nibbles are our codes + 8), Q4_1 and Q4_K as int4 with mins
// (kQ4M: the raw nibbles; Q4_1's d and m as they are, each of Q4_K's eight sub-blocks' d * scale and
// -dmin * min rounded once to f16, under 2^-11 of each).
int gguf_quant_dtype(int type, int bits);

// rows x cols of ggml blocks (cols whole blocks, rows of whole blocks one after another) as a
// QuantMatrix of `bits` in groups of 32 holding the blocks' codes, scales (and mins): the
// gguf_quant_dtype(type, bits) layout, checked by the caller. Row r comes from source row order[r]
// (order null: row r). Parallel.
std::shared_ptr<QuantMatrix> gguf_to_quant(int type, const uint8_t* src, int64_t rows, int64_t cols, int bits,
                                           const int32_t* order);

}  // namespace hire
