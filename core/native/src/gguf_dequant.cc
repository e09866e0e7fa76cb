// GGUF tensor data (ggml's block-quantized types) to f32 / f16 / bf16, for importing llama.cpp model
// files (core/gguf/import.ts). Each block becomes its values as ggml's dequantize_row_* computes
// them (float32 products), then is rounded to the output dtype. Blocks are independent, so the pool
// splits the tensor into runs of blocks. The caller (core/gguf/quants.ts) has checked that `src`
// holds exactly n values of `type` in whole blocks and that `dst` holds n outputs.
#include "gguf_dequant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dtype.h"
#include "sparse.h"
#include "threadpool.h"

namespace hire {
namespace {

enum GgmlType : int {
  kGF32 = 0, kGF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23, kGBF16 = 30,
};

// The 16 non-uniform levels IQ4_NL and IQ4_XS index with their 4-bit codes.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Q4_0 / Q4_1: d (and m), 16 bytes: value j in the low nibble of byte j, value j + 16 in its high one.
void q4(const uint8_t* b, float* y, bool one) {
  const float d = h2f(b);
  const float m = one ? h2f(b + 2) : 0.0f;
  const uint8_t* q = b + (one ? 4 : 2);
  for (int j = 0; j < 16; ++j) {
    const int lo = q[j] & 15, hi = q[j] >> 4;
    y[j] = one ? lo * d + m : (lo - 8) * d;
    y[j + 16] = one ? hi * d + m : (hi - 8) * d;
  }
}

// Q5_0 / Q5_1: as Q4 with each value's fifth bit in a 32-bit mask (value j's is bit j).
void q5(const uint8_t* b, float* y, bool one) {
  const float d = h2f(b);
  const float m = one ? h2f(b + 2) : 0.0f;
  const uint8_t* h = b + (one ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, h, 4);
  const uint8_t* q = h + 4;
  for (int j = 0; j < 16; ++j) {
    const int lo = (q[j] & 15) | (((qh >> j) & 1) << 4);
    const int hi = (q[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = one ? lo * d + m : (lo - 16) * d;
    y[j + 16] = one ? hi * d + m : (hi - 16) * d;
  }
}

void q8_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<int8_t>(b[2 + j]) * d;
}

// Q2_K: 16 scale/min bytes (4 bits each), 64 bytes of 2-bit values, d, dmin.
void q2_k(const uint8_t* b, float* y) {
  const float d = h2f(b + 80), dmin = h2f(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = b + 16 + 32 * half;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t sc = b[is++];
        const float dl = d * (sc & 15), ml = dmin * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[16 * part + l] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K: 32 bytes of high bits, 64 bytes of 2-bit values, 12 bytes of 6-bit scales, d.
void q3_k(const uint8_t* b, float* y) {
  const float d = h2f(b + 108);
  const uint8_t* s = b + 96;
  int8_t scales[16];
  // Low 4 bits from bytes 0-7 (low nibbles, then high), high 2 bits from bytes 8-11.
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    scales[j] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = b + 32 + 32 * half;
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * scales[is++];
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * part + l;
          *y++ = dl * (((q[i] >> shift) & 3) - ((b[i] & m) ? 0 : 4));
        }
      }
    }
  }
}

// Sub-block j's 6-bit scale and min of a Q4_K / Q5_K block's 12 packed bytes `sc`.
void k_scale_min(const uint8_t* sc, int j, int& s, int& m) {
  if (j < 4) {
    s = sc[j] & 63;
    m = sc[j + 4] & 63;
  } else {
    s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
    m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
}

// Q4_K / Q5_K: d, dmin, 12 bytes of 6-bit scales and mins, (Q5_K: 32 bytes of fifth bits,) 128 bytes of nibbles.
void q45_k(const uint8_t* b, float* y, bool five) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + (five ? 48 : 16);
  for (int j = 0; j < 8; j += 2, ql += 32, y += 64) {
    int s1, m1, s2, m2;
    k_scale_min(sc, j, s1, m1);
    k_scale_min(sc, j + 1, s2, m2);
    const float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
    const uint8_t u1 = static_cast<uint8_t>(1 << j), u2 = static_cast<uint8_t>(2 << j);
    for (int l = 0; l < 32; ++l) y[l] = d1 * ((ql[l] & 15) + (five && (qh[l] & u1) ? 16 : 0)) - n1;
    for (int l = 0; l < 32; ++l) y[32 + l] = d2 * ((ql[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - n2;
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, d.
void q6_k(const uint8_t* b, float* y) {
  const float d = h2f(b + 208);
  for (int half = 0; half < 2; ++half, y += 128) {
    const uint8_t* ql = b + 64 * half;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * half);
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4v = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4v;
    }
  }
}

// IQ4_NL: d, 16 bytes of level indices (value j in the low nibble of byte j, j + 16 in its high one).
void iq4_nl(const uint8_t* b, float* y) {
  const float d = h2f(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * kIq4Levels[b[2 + j] & 15];
    y[j + 16] = d * kIq4Levels[b[2 + j] >> 4];
  }
}

// IQ4_XS: d, the 6-bit scales of 8 sub-blocks (high 2 bits in a u16, low 4 in 4 bytes), 128 bytes of
// level indices, each sub-block of 32 laid out as IQ4_NL's.
void iq4_xs(const uint8_t* b, float* y) {
  const float d = h2f(b);
  const int scales_h = b[2] | (b[3] << 8);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
    const int ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((scales_h >> (2 * ib)) & 3) << 4);
    const float dl = d * (ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * kIq4Levels[qs[j] & 15];
      y[j + 16] = dl * kIq4Levels[qs[j] >> 4];
    }
  }
}

// One block of `type` at b → `values` floats at y.
void block(int type, const uint8_t* b, float* y, int values) {
  switch (type) {
    case kGF32: std::memcpy(y, b, 4); break;
    case kGF16: y[0] = h2f(b); break;
    case kGBF16: { uint16_t h; std::memcpy(&h, b, 2); y[0] = bf16_to_float(h); break; }
    case kQ4_0: q4(b, y, false); break;
    case kQ4_1: q4(b, y, true); break;
    case kQ5_0: q5(b, y, false); break;
    case kQ5_1: q5(b, y, true); break;
    case kQ8_0: q8_0(b, y); break;
    case kQ2_K: q2_k(b, y); break;
    case kQ3_K: q3_k(b, y); break;
    case kQ4_K: q45_k(b, y, false); break;
    case kQ5_K: q45_k(b, y, true); break;
    case kQ6_K: q6_k(b, y); break;
    case kIQ4_NL: iq4_nl(b, y); break;
    case kIQ4_XS: iq4_xs(b, y); break;
    default: std::memset(y, 0, sizeof(float) * values);
  }
}

}  // namespace

bool gguf_block_shape(int type, int& values, int& bytes) {
  switch (type) {
    case kGF32: values = 1; bytes = 4; return true;
    case kGF16: case kGBF16: values = 1; bytes = 2; return true;
    case kQ4_0: values = 32; bytes = 18; return true;
    case kQ4_1: values = 32; bytes = 20; return true;
    case kQ5_0: values = 32; bytes = 22; return true;
    case kQ5_1: values = 32; bytes = 24; return true;
    case kQ8_0: values = 32; bytes = 34; return true;
    case kQ2_K: values = 256; bytes = 84; return true;
    case kQ3_K: values = 256; bytes = 110; return true;
    case kQ4_K: values = 256; bytes = 144; return true;
    case kQ5_K: values = 256; bytes = 176; return true;
    case kQ6_K: values = 256; bytes = 210; return true;
    case kIQ4_NL: values = 32; bytes = 18; return true;
    case kIQ4_XS: values = 256; bytes = 136; return true;
    default: return false;
  }
}

bool gguf_quantizes(int type) {
  return type == kQ8_0 || type == kQ4_0 || type == kQ5_0 || type == kQ4_K || type == kQ6_K;
}

namespace {

void quantize_q8_0_block(const float* v, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = float_to_half(d);
  std::memcpy(y, &h, 2);
  for (int j = 0; j < 32; ++j) y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(v[j] * id)));
}

// The value of largest magnitude among a block's 32 (the first such), which Q4_0 and Q5_0 scale by.
float largest_magnitude(const float* v) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(v[j])) {
      amax = std::fabs(v[j]);
      max = v[j];
    }
  }
  return max;
}

void quantize_q4_0_block(const float* v, uint8_t* y) {
  const float d = largest_magnitude(v) / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = float_to_half(d);
  std::memcpy(y, &h, 2);
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(v[j] * id + 8.5f)));
    const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(v[j + 16] * id + 8.5f)));
    y[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

// ggml's quantize_row_q5_0_ref: d = max / -16 (max: the value of largest magnitude), codes
// min(31, trunc(v / d + 16.5)), their low nibbles in qs (j and j + 16 share a byte) and fifth bits
// in the 32-bit qh (bit j for value j). What llama-quantize falls back to for a Q4_K matrix whose
// rows are not whole blocks of 256.
void quantize_q5_0_block(const float* v, uint8_t* y) {
  const float d = largest_magnitude(v) / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = float_to_half(d);
  std::memcpy(y, &h, 2);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(31, static_cast<int>(static_cast<int8_t>(v[j] * id + 16.5f)));
    const int hi = std::min(31, static_cast<int>(static_cast<int8_t>(v[j + 16] * id + 16.5f)));
    y[6 + j] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
    qh |= static_cast<uint32_t>((lo & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((hi & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(y + 2, &qh, 4);
}

// One sub-block of 32 values as codes 0..15 with value ~ s * code - m (s > 0, m >= 0, as Q4_K stores
// them): start from the range [min(0, lo), hi], then alternate codes and the least-squares s and m
// for those codes a few times (m kept >= 0). Our own fit, not llama-quantize's weighted search.
void fit_sub_block(const float* v, float& s, float& m) {
  float lo = 0.0f, hi = v[0];
  for (int j = 0; j < 32; ++j) {
    lo = std::min(lo, v[j]);
    hi = std::max(hi, v[j]);
  }
  s = (hi - lo) / 15.0f;
  m = -lo;
  if (s <= 0.0f) {
    s = 0.0f;
    return;
  }
  for (int it = 0; it < 4; ++it) {
    double sq = 0, sq2 = 0, sx = 0, sqx = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = std::clamp(std::nearbyint((v[j] + m) / s), 0.0f, 15.0f);
      sq += q;
      sq2 += q * q;
      sx += v[j];
      sqx += q * v[j];
    }
    // Minimise sum (s q_j - m - v_j)^2 over s and m.
    const double det = 32 * sq2 - sq * sq;
    if (det <= 0) break;
    const double ns = (32 * sqx - sq * sx) / det;
    const double nm = (sq * sqx - sq2 * sx) / det;
    if (!(ns > 0)) break;
    s = static_cast<float>(ns);
    m = static_cast<float>(std::max(0.0, nm));
  }
}

// Q4_K (256 values, 144 bytes): each sub-block fitted alone, its scale and min then stored as 6-bit
// multiples of the block's d = max scale / 63 and dmin = max min / 63 (f16), and the codes chosen
// against the scales and mins as they decode (d * sc, dmin * m), layout as q45_k reads it.
void quantize_q4_k_block(const float* v, uint8_t* y) {
  float sub_s[8], sub_m[8], max_s = 0.0f, max_m = 0.0f;
  for (int j = 0; j < 8; ++j) {
    fit_sub_block(v + 32 * j, sub_s[j], sub_m[j]);
    max_s = std::max(max_s, sub_s[j]);
    max_m = std::max(max_m, sub_m[j]);
  }
  const uint16_t dh = float_to_half(max_s / 63.0f), mh = float_to_half(max_m / 63.0f);
  std::memcpy(y, &dh, 2);
  std::memcpy(y + 2, &mh, 2);
  const float d = half_to_float(dh), dmin = half_to_float(mh);
  uint8_t* sc = y + 4;
  std::memset(sc, 0, 12);
  int ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = d > 0.0f ? std::min(63, static_cast<int>(std::nearbyint(sub_s[j] / d))) : 0;
    lm[j] = dmin > 0.0f ? std::min(63, static_cast<int>(std::nearbyint(sub_m[j] / dmin))) : 0;
    if (j < 4) {
      sc[j] = static_cast<uint8_t>(ls[j]);
      sc[j + 4] = static_cast<uint8_t>(lm[j]);
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls[j] & 15) | ((lm[j] & 15) << 4));
      sc[j - 4] = static_cast<uint8_t>(sc[j - 4] | ((ls[j] >> 4) << 6));
      sc[j] = static_cast<uint8_t>(sc[j] | ((lm[j] >> 4) << 6));
    }
  }
  uint8_t* ql = y + 16;
  for (int j = 0; j < 8; ++j) {
    const float s = d * static_cast<float>(ls[j]), m = dmin * static_cast<float>(lm[j]);
    for (int l = 0; l < 32; ++l) {
      const int q = s > 0.0f ? static_cast<int>(std::clamp(std::nearbyint((v[32 * j + l] + m) / s), 0.0f, 15.0f)) : 0;
      uint8_t& b = ql[32 * (j / 2) + l];
      b = static_cast<uint8_t>((j & 1) ? (b | (q << 4)) : q);
    }
  }
}

// Q6_K (256 values, 210 bytes): per 16 values a signed scale s = (the value of largest magnitude) /
// −32, stored as an int8 multiple of the block's d = max |s| / 127 (f16); codes −32..31 against the
// scales as they decode (d × int8), low 4 bits in ql, high 2 in qh, as q6_k reads them.
void quantize_q6_k_block(const float* v, uint8_t* y) {
  float sub[16], max_s = 0.0f;
  for (int j = 0; j < 16; ++j) {
    float amax = 0.0f, vmax = 0.0f;
    for (int l = 0; l < 16; ++l) {
      const float a = std::fabs(v[16 * j + l]);
      if (a > amax) {
        amax = a;
        vmax = v[16 * j + l];
      }
    }
    sub[j] = vmax / -32.0f;
    max_s = std::max(max_s, std::fabs(sub[j]));
  }
  const uint16_t dh = float_to_half(max_s / 127.0f);
  std::memcpy(y + 208, &dh, 2);
  const float d = half_to_float(dh);
  int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
  int q[256];
  for (int j = 0; j < 16; ++j) {
    sc[j] = static_cast<int8_t>(d > 0.0f ? std::clamp(static_cast<int>(std::nearbyint(sub[j] / d)), -127, 127) : 0);
    const float e = d * static_cast<float>(sc[j]);
    for (int l = 0; l < 16; ++l)
      q[16 * j + l] = e != 0.0f ? static_cast<int>(std::clamp(std::nearbyint(v[16 * j + l] / e), -32.0f, 31.0f)) : 0;
  }
  for (int h = 0; h < 2; ++h) {
    uint8_t* ql = y + 64 * h;
    uint8_t* qh = y + 128 + 32 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = q[128 * h + l] + 32, q2 = q[128 * h + l + 32] + 32;
      const int q3 = q[128 * h + l + 64] + 32, q4 = q[128 * h + l + 96] + 32;
      ql[l] = static_cast<uint8_t>((q1 & 15) | ((q3 & 15) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 15) | ((q4 & 15) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
}

}  // namespace

void gguf_quantize(int type, const float* x, int64_t n, uint8_t* out) {
  int values = 0, bytes = 0;
  if (!gguf_quantizes(type) || !gguf_block_shape(type, values, bytes)) return;
  const int64_t blocks = n / values;
  const int64_t per_task = 65536 / values;
  ThreadPool::instance().parallel_for((blocks + per_task - 1) / per_task, [&](int64_t t, int) {
    for (int64_t b = t * per_task; b < blocks && b < (t + 1) * per_task; ++b) {
      if (type == kQ8_0) quantize_q8_0_block(x + values * b, out + bytes * b);
      else if (type == kQ4_0) quantize_q4_0_block(x + values * b, out + bytes * b);
      else if (type == kQ5_0) quantize_q5_0_block(x + values * b, out + bytes * b);
      else if (type == kQ4_K) quantize_q4_k_block(x + values * b, out + bytes * b);
      else quantize_q6_k_block(x + values * b, out + bytes * b);
    }
  });
}

int gguf_quant_dtype(int type, int bits) {
  if (bits == 8) return type == kQ8_0 || type == kQ4_0 || type == kQ5_0 ? kQ8 : -1;
  if (bits == 4) return type == kQ4_0 ? kQ4 : type == kQ4_1 || type == kQ4_K ? kQ4M : -1;
  return -1;
}

namespace {

inline uint16_t half_bits(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// A block's values as groups of 32 (1 group, or Q4_K's 8): signed codes, value = code * scale (Q8_0,
// Q4_0, Q5_0) or (code + 8) * scale + min (Q4_1, Q4_K: the raw nibble), and each group's f16 scale
// and min. Q4_K's scale d * sc and min -dmin * m are its f32 products rounded once to f16.
void block_groups(int type, const uint8_t* b, int8_t* q, uint16_t* scale, uint16_t* min) {
  if (type == kQ8_0) {
    scale[0] = half_bits(b);
    std::memcpy(q, b + 2, 32);
  } else if (type == kQ4_0 || type == kQ4_1) {
    const bool one = type == kQ4_1;
    scale[0] = half_bits(b);
    if (one) min[0] = half_bits(b + 2);
    const uint8_t* c = b + (one ? 4 : 2);
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>((c[j] & 15) - 8);
      q[j + 16] = static_cast<int8_t>((c[j] >> 4) - 8);
    }
  } else if (type == kQ5_0) {
    scale[0] = half_bits(b);
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>(((b[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16);
      q[j + 16] = static_cast<int8_t>(((b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
    }
  } else {  // Q4_K: sub-block 2i is the low nibbles of ql[32i ..], 2i + 1 their high ones (q45_k)
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t* sc = b + 4;
    const uint8_t* ql = b + 16;
    for (int j = 0; j < 8; ++j) {
      int s, m;
      k_scale_min(sc, j, s, m);
      scale[j] = float_to_half(d * static_cast<float>(s));
      min[j] = float_to_half(-(dmin * static_cast<float>(m)));
      const uint8_t* c = ql + 32 * (j / 2);
      const int shift = (j & 1) ? 4 : 0;
      for (int l = 0; l < 32; ++l) q[32 * j + l] = static_cast<int8_t>(((c[l] >> shift) & 15) - 8);
    }
  }
}

}  // namespace

std::shared_ptr<QuantMatrix> gguf_to_quant(int type, const uint8_t* src, int64_t rows, int64_t cols, int bits,
                                           const int32_t* order) {
  int values = 0, bytes = 0;
  gguf_block_shape(type, values, bytes);
  const bool mins = gguf_quant_dtype(type, bits) == kQ4M;
  auto q = std::make_shared<QuantMatrix>(QuantMatrix::shape(rows, cols, bits, 32, mins));
  q->mem = Buffer::alloc(static_cast<size_t>(q->bytes() + QuantMatrix::kQuantSlack));
  std::memset(q->mem->data() + q->bytes(), 0, QuantMatrix::kQuantSlack);
  const int64_t blocks = cols / values, src_row = blocks * bytes, gpb = values / 32;
  constexpr int64_t kRowsPerTask = 16;
  ThreadPool::instance().parallel_for((rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t t, int) {
    std::unique_ptr<int8_t[]> codes(new int8_t[static_cast<size_t>(q->padded) + 64]());
    for (int64_t r = t * kRowsPerTask; r < rows && r < (t + 1) * kRowsPerTask; ++r) {
      const uint8_t* s = src + (order ? order[r] : r) * src_row;
      uint16_t* scales = const_cast<uint16_t*>(q->scales(r));
      uint16_t* row_mins = mins ? const_cast<uint16_t*>(q->min_values(r)) : nullptr;
      uint16_t unused[8];
      for (int64_t b = 0; b < blocks; ++b)
        block_groups(type, s + b * bytes, codes.get() + values * b, scales + gpb * b,
                     row_mins ? row_mins + gpb * b : unused);
      pack_codes(*q, r, codes.get());
    }
  });
  return q;
}

void gguf_dequantize(int type, const uint8_t* src, int64_t n, int out_dtype, void* dst) {
  int values = 0, bytes = 0;
  if (!gguf_block_shape(type, values, bytes)) return;
  const int64_t blocks = n / values;
  // Runs of blocks of about 64 Ki values, each through a small float buffer.
  const int64_t per_task = (65536 + values - 1) / values;
  const int64_t tasks = (blocks + per_task - 1) / per_task;
  ThreadPool::instance().parallel_for(tasks, [&](int64_t task, int) {
    float buf[256];
    const int64_t b0 = task * per_task, b1 = b0 + per_task < blocks ? b0 + per_task : blocks;
    for (int64_t bi = b0; bi < b1; ++bi) {
      block(type, src + bi * bytes, buf, values);
      const int64_t at = bi * values;
      if (out_dtype == kF32) {
        std::memcpy(static_cast<float*>(dst) + at, buf, sizeof(float) * values);
      } else {
        uint16_t* out = static_cast<uint16_t*>(dst) + at;
        for (int i = 0; i < values; ++i) out[i] = out_dtype == kF16 ? float_to_half(buf[i]) : float_to_bf16(buf[i]);
      }
    }
  });
}

}  // namespace hire
