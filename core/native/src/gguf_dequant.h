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

// Whether gguf_quantize writes ggml `type` (Q8_0, Q4_0).
bool gguf_quantizes(int type);
// n floats (a multiple of 32) as blocks of ggml `type` at out, as ggml's quantize_row_*_ref make them
// (GGUF export), the codes always from the unrounded d, which is stored as f16:
//   Q8_0: d = max|x| / 127, codes roundf(x / d);
//   Q4_0: d = (the value of largest magnitude) / -8, nibbles min(15, trunc(x / d + 8.5)).
// Parallel.
void gguf_quantize(int type, const float* x, int64_t n, uint8_t* out);

// Whether ggml `type`'s blocks of 32 are exactly groups of 32 with `bits`-bit codes (QuantMatrix):
// Q8_0, Q4_0 and Q5_0 as int8 (their codes -127..127, -8..7 and -16..15 times the block's f16 d), Q4_0
// as int4 (its nibbles are our codes + 8).
bool gguf_exact_in(int type, int bits);

// rows x cols of ggml blocks (cols a multiple of 32, rows of whole blocks one after another) as a
// QuantMatrix of `bits` in groups of 32 with the same values: each block's d is its group's scale, its
// codes are the group's codes. Row r comes from source row order[r] (order null: row r). The type must
// be gguf_exact_in(type, bits), checked by the caller. Parallel.
std::shared_ptr<QuantMatrix> gguf_to_quant(int type, const uint8_t* src, int64_t rows, int64_t cols, int bits,
                                           const int32_t* order);

}  // namespace hire
