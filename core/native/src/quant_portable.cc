// Portable quant_gemv: exact int32 dot products per group, one f32 multiply-add per group with the
// two scales. The reference for quant_avx2.cc (same integers, f32 sums in a different order).
#include "quant_kernels.h"

namespace hire {

void portable_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  const int64_t G = q.group;
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* codes = q.codes(r);
    const uint16_t* sc = q.scales(r);
    float acc = 0.0f;
    for (int64_t g = 0; g < q.groups; ++g) {
      int32_t s = 0;
      const int8_t* xq = x.q + g * G;
      if (q.bits == 8) {
        const int8_t* wq = reinterpret_cast<const int8_t*>(codes) + g * G;
        for (int64_t j = 0; j < G; ++j) s += static_cast<int32_t>(wq[j]) * xq[j];
      } else {
        // Value v = g*G + j sits in byte 32 (v / 64) + v % 32, high nibble when v % 64 >= 32.
        for (int64_t j0 = 0; j0 < G; j0 += 32) {
          const int64_t v = g * G + j0;
          const unsigned char* b = codes + (v / 64) * 32;
          const int shift = (v % 64) >= 32 ? 4 : 0;
          for (int64_t j = 0; j < 32; ++j)
            s += (static_cast<int32_t>((b[j] >> shift) & 15) - 8) * xq[j0 + j];
        }
      }
      acc += (half_to_float(sc[g]) * x.scale[g]) * static_cast<float>(s);
    }
    y[r] = acc;
  }
}

}  // namespace hire
