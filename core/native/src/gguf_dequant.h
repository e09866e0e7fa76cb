// GGUF tensor data (ggml's block-quantized types) to f32 / f16 / bf16: see gguf_dequant.cc.
#pragma once
#include <cstdint>

namespace hire {

// Values and bytes per block of ggml type `type`; false for a type this file does not read.
bool gguf_block_shape(int type, int& values, int& bytes);

// n values of ggml type `type` at src (whole blocks, checked by the caller) into dst as out_dtype
// (DType: kF32, kF16 or kBF16), on the thread pool.
void gguf_dequantize(int type, const uint8_t* src, int64_t n, int out_dtype, void* dst);

}  // namespace hire
