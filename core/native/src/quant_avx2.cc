// AVX2 quant_gemv (llama.cpp's Q4_0 x Q8_0 / Q8_0 x Q8_0 idea, own code): the weight codes and the
// int8 copy of x meet in integer dot products, one f32 FMA per group with the two scales.
//   int4: the raw codes (q + 8, 0..15) are unsigned, so _mm256_maddubs_epi16(codes, xq) works
//         without sign tricks (|sum| <= 2 * 15 * 127, and up to 8 of them still fit in int16); the
//         + 8 offset is removed exactly, in int32, lane by lane, with x.corr (see quant.h), so each
//         lane is an unbiased integer sum before its one rounding to f32.
//   Group 32 folds 4 groups into one vector with hadds (one convert + FMA per 4 groups).
//   int8: maddubs(|w|, sign(x, w)) (|sum| <= 2 * 127 * 127), then madd(., 1) to int32.
// Each row is prefetched whole `ahead` rows in advance (>= 8 KiB): the rows of a chunk are one
// linear stream. Only intrinsics and plain code inside HIRE_AVX2 functions (see kernels_avx2.cc).
#include "quant_kernels.h"
#include "scratch.h"

#if HIRE_X86_64

#include <immintrin.h>


#define HIRE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace hire {
namespace {

HIRE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// d[g] = f32(scale_w[g]) * scale_x[g] for g < n (n a multiple of 8). Past the row's groups sw reads
// whatever follows (the next row, or the buffer's slack) and sx is zero: those d are never used.
HIRE_AVX2 inline void group_scales(const uint16_t* sw, const float* sx, int64_t n, float* d) {
  for (int64_t g = 0; g < n; g += 8) {
    const __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sw + g)));
    _mm256_store_ps(d + g, _mm256_mul_ps(w, _mm256_load_ps(sx + g)));
  }
}

HIRE_AVX2 inline __m256i lo_nibbles(__m256i w) { return _mm256_and_si256(w, _mm256_set1_epi8(0x0f)); }
HIRE_AVX2 inline __m256i hi_nibbles(__m256i w) {
  return _mm256_and_si256(_mm256_srli_epi16(w, 4), _mm256_set1_epi8(0x0f));
}
HIRE_AVX2 inline __m256i ld(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// int4, group 32, 4 groups (two 32-byte loads) per block: the 4 maddubs results (int16, |lane| <=
// 3810) are folded by three hadds into [g0 g0 g1 g1 g2 g2 g3 g3] per 128-bit half (|lane| <= 15240),
// so one madd, one convert and one FMA (the 4 group scales broadcast to both halves) serve 4 groups.
// Lanes: low half = values 0..15 of each group, high half = 16..31; x.corr removes the + 8 offset
// of exactly those values, so every lane is the exact, unbiased sum of q * xq over its values.
HIRE_AVX2 inline __m256 q4_block4(const unsigned char* codes, const int8_t* xq, const int32_t* corr) {
  const __m256i w0 = ld(codes), w1 = ld(codes + 32);
  const __m256i m0 = _mm256_maddubs_epi16(lo_nibbles(w0), ld(xq));
  const __m256i m1 = _mm256_maddubs_epi16(hi_nibbles(w0), ld(xq + 32));
  const __m256i m2 = _mm256_maddubs_epi16(lo_nibbles(w1), ld(xq + 64));
  const __m256i m3 = _mm256_maddubs_epi16(hi_nibbles(w1), ld(xq + 96));
  const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(m0, m1), _mm256_hadd_epi16(m2, m3));
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_madd_epi16(h, _mm256_set1_epi16(1)), ld(corr)));
}

HIRE_AVX2 float q4_row_g32(const unsigned char* codes, const float* d, const int8_t* xq, const int32_t* corr,
                           int64_t groups) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    a0 = _mm256_fmadd_ps(q4_block4(codes + 16 * g, xq + 32 * g, corr + 2 * g),
                         _mm256_broadcast_ps(reinterpret_cast<const __m128*>(d + g)), a0);
    a1 = _mm256_fmadd_ps(q4_block4(codes + 16 * g + 64, xq + 32 * g + 128, corr + 2 * g + 8),
                         _mm256_broadcast_ps(reinterpret_cast<const __m128*>(d + g + 4)), a1);
  }
  if (g + 4 <= groups) {
    a0 = _mm256_fmadd_ps(q4_block4(codes + 16 * g, xq + 32 * g, corr + 2 * g),
                         _mm256_broadcast_ps(reinterpret_cast<const __m128*>(d + g)), a0);
    g += 4;
  }
  // Last 1..3 groups alone: folded the same way against zeros (values 0..15 in lane 0, 16..31 in 4).
  const __m256i z = _mm256_setzero_si256();
  for (; g < groups; ++g) {
    const __m256i w = ld(codes + 32 * (g / 2));
    const __m256i q = (g & 1) ? hi_nibbles(w) : lo_nibbles(w);
    const __m256i m = _mm256_maddubs_epi16(q, ld(xq + 32 * g));
    const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(m, z), z);
    const int32_t* c = corr + 8 * (g / 4) + (g % 4);
    const __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(h, _mm256_set1_epi16(1)),
                                       _mm256_setr_epi32(c[0], 0, 0, 0, c[4], 0, 0, 0));
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_broadcast_ss(d + g), a0);
  }
  return hsum(_mm256_add_ps(a0, a1));
}

// int4, group = 64 * CPG (CPG = 0: runtime cpg): CPG whole 32-byte chunks per group, int16 sums of
// up to 4 chunks (8 maddubs, |lane| <= 30480) before widening; lane l (bytes 4l .. 4l+3 of every
// vector) minus its share of the offset from x.corr.
template <int CPG>
HIRE_AVX2 float q4_row_g64n(const unsigned char* codes, const float* d, const int8_t* xq, const int32_t* corr,
                            int64_t groups, int64_t cpg_rt) {
  const int64_t cpg = CPG > 0 ? CPG : cpg_rt;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t g = 0;
  auto group = [&](int64_t gg) HIRE_AVX2 {
    const unsigned char* w = codes + 32 * cpg * gg;
    const int8_t* xg = xq + 64 * cpg * gg;
    __m256i s32 = _mm256_sub_epi32(_mm256_setzero_si256(), ld(corr + 8 * gg));
    for (int64_t c0 = 0; c0 < cpg; c0 += 4) {
      const int64_t c1 = c0 + 4 < cpg ? c0 + 4 : cpg;
      __m256i s16 = _mm256_setzero_si256();
      for (int64_t c = c0; c < c1; ++c) {
        const __m256i v = ld(w + 32 * c);
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo_nibbles(v), ld(xg + 64 * c)));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi_nibbles(v), ld(xg + 64 * c + 32)));
      }
      s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
    }
    return _mm256_cvtepi32_ps(s32);
  };
  for (; g + 2 <= groups; g += 2) {
    a0 = _mm256_fmadd_ps(group(g), _mm256_broadcast_ss(d + g), a0);
    a1 = _mm256_fmadd_ps(group(g + 1), _mm256_broadcast_ss(d + g + 1), a1);
  }
  if (g < groups) a0 = _mm256_fmadd_ps(group(g), _mm256_broadcast_ss(d + g), a0);
  return hsum(_mm256_add_ps(a0, a1));
}

// int4, any group (a multiple of 32): vector by vector.
HIRE_AVX2 float q4_row_any(const unsigned char* codes, const float* d, const int8_t* xq, const int32_t* corr,
                           int64_t groups, int64_t vpg) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 a0 = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256i s32 = _mm256_sub_epi32(_mm256_setzero_si256(), ld(corr + 8 * g)), s16 = _mm256_setzero_si256();
    for (int64_t t = 0; t < vpg; ++t) {
      const int64_t v = g * vpg + t;
      const __m256i w = ld(codes + 32 * (v >> 1));
      const __m256i q = (v & 1) ? hi_nibbles(w) : lo_nibbles(w);
      s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(q, ld(xq + 32 * v)));
      if ((t & 7) == 7) {
        s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
        s16 = _mm256_setzero_si256();
      }
    }
    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_broadcast_ss(d + g), a0);
  }
  return hsum(a0);
}

HIRE_AVX2 inline __m256i dot8x32(const int8_t* w, const int8_t* x) {
  const __m256i wv = ld(w), xv = ld(x);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)),
                           _mm256_set1_epi16(1));
}

// int8, group 32: one vector per group, 4 groups per step.
HIRE_AVX2 float q8_row_g32(const int8_t* w, const float* d, const int8_t* xq, int64_t groups) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8x32(w + 32 * g, xq + 32 * g)), _mm256_broadcast_ss(d + g), a0);
    a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8x32(w + 32 * g + 32, xq + 32 * g + 32)),
                         _mm256_broadcast_ss(d + g + 1), a1);
    a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8x32(w + 32 * g + 64, xq + 32 * g + 64)),
                         _mm256_broadcast_ss(d + g + 2), a2);
    a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8x32(w + 32 * g + 96, xq + 32 * g + 96)),
                         _mm256_broadcast_ss(d + g + 3), a3);
  }
  for (; g < groups; ++g)
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot8x32(w + 32 * g, xq + 32 * g)), _mm256_broadcast_ss(d + g), a0);
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

// int8, VPG vectors per group (VPG = 0: runtime vpg).
template <int VPG>
HIRE_AVX2 float q8_row_any(const int8_t* w, const float* d, const int8_t* xq, int64_t groups, int64_t vpg_rt) {
  const int64_t vpg = VPG > 0 ? VPG : vpg_rt;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* wg = w + 32 * vpg * g;
    const int8_t* xg = xq + 32 * vpg * g;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0;
    int64_t t = 0;
    for (; t + 2 <= vpg; t += 2) {
      s0 = _mm256_add_epi32(s0, dot8x32(wg + 32 * t, xg + 32 * t));
      s1 = _mm256_add_epi32(s1, dot8x32(wg + 32 * t + 32, xg + 32 * t + 32));
    }
    if (t < vpg) s0 = _mm256_add_epi32(s0, dot8x32(wg + 32 * t, xg + 32 * t));
    const __m256 s = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
    if (g & 1) {
      a1 = _mm256_fmadd_ps(s, _mm256_broadcast_ss(d + g), a1);
    } else {
      a0 = _mm256_fmadd_ps(s, _mm256_broadcast_ss(d + g), a0);
    }
  }
  return hsum(_mm256_add_ps(a0, a1));
}

// sum_g (min_g + 8 scale_g) * xsum_g: what a row's group minimums add to its symmetric product (quant.h).
HIRE_AVX2 float min_term(const uint16_t* sc, const uint16_t* mn, const float* xsum, int64_t groups) {
  __m256 a = _mm256_setzero_ps();
  const __m256 eight = _mm256_set1_ps(8.0f);
  int64_t g = 0;
  for (; g + 8 <= groups; g += 8) {
    const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g)));
    const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mn + g)));
    a = _mm256_fmadd_ps(_mm256_fmadd_ps(eight, s, m), _mm256_loadu_ps(xsum + g), a);
  }
  float t = hsum(a);
  for (; g < groups; ++g) t += (half_to_float(mn[g]) + 8.0f * half_to_float(sc[g])) * xsum[g];
  return t;
}

HIRE_AVX2 void quant_rows(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1, float* d) {
  const int64_t stride = q.row_stride;
  const int64_t ahead = (8192 + stride - 1) / stride;
  const int64_t vpg = q.group / 32;
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* row = q.codes(r);
    if (r + ahead < r1) {
      const unsigned char* p = row + ahead * stride;
      prefetch_span(p, stride);
    }
    group_scales(q.scales(r), x.scale, (q.groups + 7) & ~int64_t{7}, d);
    float v;
    if (q.bits == 4) {
      if (vpg == 1) {
        v = q4_row_g32(row, d, x.q, x.corr, q.groups);
      } else if (vpg == 2) {
        v = q4_row_g64n<1>(row, d, x.q, x.corr, q.groups, 1);
      } else if (vpg == 4) {
        v = q4_row_g64n<2>(row, d, x.q, x.corr, q.groups, 2);
      } else if ((vpg & 1) == 0) {
        v = q4_row_g64n<0>(row, d, x.q, x.corr, q.groups, vpg / 2);
      } else {
        v = q4_row_any(row, d, x.q, x.corr, q.groups, vpg);
      }
      if (q.mins) v += min_term(q.scales(r), q.min_values(r), x.xsum, q.groups);
    } else {
      const int8_t* w = reinterpret_cast<const int8_t*>(row);
      if (vpg == 1) {
        v = q8_row_g32(w, d, x.q, q.groups);
      } else if (vpg == 2) {
        v = q8_row_any<2>(w, d, x.q, q.groups, 2);
      } else if (vpg == 4) {
        v = q8_row_any<4>(w, d, x.q, q.groups, 4);
      } else {
        v = q8_row_any<0>(w, d, x.q, q.groups, vpg);
      }
    }
    y[r] = v;
  }
}

thread_local Scratch t_d;  // per row: f32 group scales

}  // namespace

void avx2_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  quant_rows(q, x, y, r0, r1, t_d.get<float>(static_cast<size_t>(q.scale_pad)));
}

}  // namespace hire

#endif
