// Portable quant_gemv: exact int32 dot products per group, one f32 multiply-add per group with the
// two scales. The reference for quant_avx2.cc and quant_avx512.cc (same integers, f32 sums in a
// different order). The inner loops are plain 32-byte dot products of codes and int8 x that -O3
// turns into SIMD (SSE2 on x86-64, NEON on aarch64); int4 codes are used raw (q + 8) and the offset
// removed with x.corr. Groups with a minimum add (min + 8 scale) * x.xsum (quant.h).
#include "quant_kernels.h"

namespace hire {
namespace {

// sum_{j < 32} code(b[j]) * x[j], code = the nibble at `shift`.
inline int32_t dot_nibbles(const unsigned char* b, int shift, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += static_cast<int32_t>((b[j] >> shift) & 15) * static_cast<int32_t>(x[j]);
  return s;
}

inline int32_t dot_bytes(const int8_t* w, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += static_cast<int32_t>(w[j]) * static_cast<int32_t>(x[j]);
  return s;
}

}  // namespace

void portable_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  const int64_t vpg = q.group / 32;  // 32-value vectors per group
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* codes = q.codes(r);
    const uint16_t* sc = q.scales(r);
    float acc = 0.0f;
    for (int64_t g = 0; g < q.groups; ++g) {
      int32_t s = 0;
      if (q.bits == 8) {
        for (int64_t t = 0; t < vpg; ++t) {
          const int64_t v = g * vpg + t;
          s += dot_bytes(reinterpret_cast<const int8_t*>(codes) + 32 * v, x.q + 32 * v);
        }
      } else {
        // Vector v: the low (v even) or high (v odd) nibbles of the 32 bytes at 32 (v / 2).
        for (int64_t t = 0; t < vpg; ++t) {
          const int64_t v = g * vpg + t;
          s += dot_nibbles(codes + 32 * (v / 2), (v & 1) ? 4 : 0, x.q + 32 * v);
        }
        // The + 8 offset: x.corr holds 8 * sums of x.q (layout in quant.h).
        if (q.group == 32) {
          const int32_t* c = x.corr + 8 * (g / 4) + g % 4;
          s -= c[0] + c[4];
        } else {
          for (int l = 0; l < 8; ++l) s -= x.corr[8 * g + l];
        }
      }
      acc += (half_to_float(sc[g]) * x.scale[g]) * static_cast<float>(s);
    }
    if (q.mins) {
      const uint16_t* mn = q.min_values(r);
      for (int64_t g = 0; g < q.groups; ++g)
        acc += (half_to_float(mn[g]) + 8.0f * half_to_float(sc[g])) * x.xsum[g];
    }
    y[r] = acc;
  }
}

}  // namespace hire
