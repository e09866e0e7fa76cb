// Storage dtypes of weights and scalar conversions to f32, shared by every kernel path.
// Header-only and plain C++ (no SIMD attributes), so it is safe to include from any file.
// To add a dtype: extend DType, dtype_size and load_elem, then the SIMD loaders in kernels_*.cc.
// kQ8, kQ4 and kQ4M are the exception: int8 / int4 codes in groups with an f16 scale each (kQ4M: and
// an f16 minimum), a QuantMatrix's rows (quant.h), which the ops route to the quantized kernels
// themselves (quant_view) instead of the element loaders.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace hire {

enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8 = 3, kQ4 = 4, kQ4M = 5 };

// Whether dt is a quantized weight dtype (kQ8, kQ4, kQ4M), its bits per code, and whether its groups
// carry a minimum (kQ4M: value = code * scale + min, the asymmetric 4-bit of Q4_1, Q4_K, AWQ).
inline bool is_quant(int dt) { return dt == kQ8 || dt == kQ4 || dt == kQ4M; }
inline int quant_bits(int dt) { return dt == kQ8 ? 8 : 4; }
inline bool quant_has_min(int dt) { return dt == kQ4M; }

// Bytes per element of the element dtypes (not kQ8 / kQ4 / kQ4M, whose rows carry their scales: mat_row_bytes).
inline size_t dtype_size(int dt) { return dt == kF32 ? 4 : 2; }

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// IEEE half -> float, exact for every input (zeros, subnormals, inf, NaN payloads). Written with
// masks instead of branches so that conversion loops auto-vectorise.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t normal = (em << 13) + 0x38000000u;    // rebias exponent 15 -> 127
  const uint32_t inf_nan = (em << 13) | 0x7f800000u;   // keep the NaN payload
  const float sub = static_cast<float>(static_cast<int32_t>(em)) * 5.9604644775390625e-8f;  // em * 2^-24, exact
  uint32_t sub_bits;
  std::memcpy(&sub_bits, &sub, 4);
  const uint32_t is_special = 0u - static_cast<uint32_t>(em >= 0x7c00u);  // all ones when true
  const uint32_t is_normal = 0u - static_cast<uint32_t>(em >= 0x0400u);
  const uint32_t r = (inf_nan & is_special) | (normal & is_normal & ~is_special) | (sub_bits & ~is_normal);
  return bits_to_float(r | sign);
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// f32 -> IEEE half, round to nearest even; overflow gives inf, NaN stays NaN.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax >= 0x38800000u) {                                              // normal half
    const uint32_t m = ax + 0xc8000fffu + ((ax >> 13) & 1u);            // rebias (-112 << 23), round
    return static_cast<uint16_t>(sign | (m >> 13));
  }
  // Subnormal half (or zero): value * 2^24 rounded to an integer, half-even.
  const float scaled = bits_to_float(ax) * 16777216.0f;  // exact (power of two)
  const uint32_t whole = static_cast<uint32_t>(scaled);
  const float frac = scaled - static_cast<float>(whole);
  uint32_t r = whole + (frac > 0.5f || (frac == 0.5f && (whole & 1u)) ? 1u : 0u);
  return static_cast<uint16_t>(sign | r);
}

// Element idx of a dtype array at an arbitrary (possibly unaligned) address.
inline float load_elem(int dt, const void* base, int64_t idx) {
  const unsigned char* p = static_cast<const unsigned char*>(base);
  if (dt == kF32) {
    float f;
    std::memcpy(&f, p + idx * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + idx * 2, 2);
  return dt == kF16 ? half_to_float(h) : bf16_to_float(h);
}

// A weight matrix as the kernels see it. Logical shape rows x cols (y has `rows` outputs);
// memory is [rows][cols] when !transposed, [cols][rows] when transposed.
struct Mat {
  const void* data;
  int dtype;
  int64_t rows;
  int64_t cols;
  bool transposed;
  int64_t group = 0;  // kQ8 / kQ4 / kQ4M: values per scale (a multiple of 32); they are never transposed
};

}  // namespace hire
