// AVX2 + FMA + F16C primitives (kAvx2Kernels), compiled per function with target attributes so the
// binary still loads on any x86-64; ops.cc only selects this table after __builtin_cpu_supports.
// Only intrinsics and plain code in here (no std:: templates) so no AVX2 code leaks into shared inline
// functions. To add a primitive: write it with HIRE_AVX2, mirror kernels_portable.cc, fill the table.
#include "kernel_table.h"
#include "quant_kernels.h"

#if HIRE_X86_64

#include <immintrin.h>

#include <cmath>
#include <cstring>

#define HIRE_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace hire {
namespace {

// ---- loads and small helpers ---------------------------------------------------------------------

// 8 consecutive elements of a DT array starting at element idx, as f32 (any alignment).
template <int DT>
HIRE_AVX2 inline __m256 ld8(const void* base, int64_t idx) {
  if constexpr (DT == kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + idx);
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx));
    if constexpr (DT == kF16) {
      return _mm256_cvtph_ps(h);
    } else {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
  }
}

HIRE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HIRE_AVX2 inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// [sum(a), sum(b), sum(c), sum(d)]
HIRE_AVX2 inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
  const __m128 c4 = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
  const __m128 d4 = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
  return _mm_hadd_ps(_mm_hadd_ps(a4, b4), _mm_hadd_ps(c4, d4));
}

// Lanes < rem (0..8) set.
HIRE_AVX2 inline __m256i tail_mask(int64_t rem) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// exp(x), Cephes-style polynomial (about 2 ulp); 0 below -88.37, NaN propagates.
HIRE_AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-88.3762626647949f), x);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  e = _mm256_slli_epi32(e, 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

HIRE_AVX2 inline __m256 silu256(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(v, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// 0.5 v (1 + tanh(u)), tanh(u) = 1 - 2 / (exp(2u) + 1)
HIRE_AVX2 inline __m256 gelu_tanh256(__m256 v) {
  const __m256 u = _mm256_mul_ps(
      _mm256_set1_ps(0.79788456080286536f),
      _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), _mm256_mul_ps(v, v), v));
  const __m256 e = exp256(_mm256_add_ps(u, u));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, t));
}

// 0.5 v (1 + erf(v / sqrt 2)); erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7).
HIRE_AVX2 inline __m256 gelu_erf256(__m256 v) {
  const __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
  const __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0f));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  const __m256 erf_abs = _mm256_fnmadd_ps(p, e, one);
  const __m256 erf = _mm256_or_ps(erf_abs, sign);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, erf));
}

// ---- conversion ----------------------------------------------------------------------------------

template <int DT>
HIRE_AVX2 void to_f32_dt(const void* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, ld8<DT>(src, i));
  for (; i < count; ++i) dst[i] = load_elem(DT, src, i);
}

HIRE_AVX2 void a_to_f32(int dt, const void* src, int64_t count, float* dst) {
  if (dt == kF32) {
    std::memcpy(dst, src, static_cast<size_t>(count) * 4);
  } else if (dt == kF16) {
    to_f32_dt<kF16>(src, count, dst);
  } else {
    to_f32_dt<kBF16>(src, count, dst);
  }
}

// ---- GEMV (decode, n == 1) -----------------------------------------------------------------------

// out[i] = dot(w_i, x) for 4 rows at once: 8 independent accumulators, each weight byte read once.
// Single rows go through here too (duplicated pointers) so every row is summed in the same order.
// The rows of a chunk are contiguous, so each step also prefetches the chunk linearly, one 4-row
// group (at least 8 KiB) ahead, up to pf_end: short rows give the hardware prefetcher too little to
// lock on, and one core only reaches full DRAM bandwidth with that many lines in flight.
HIRE_AVX2 inline int64_t prefetch_distance(size_t row_bytes) {
  const int64_t group = 4 * static_cast<int64_t>(row_bytes);
  return group < 8192 ? 8192 : group > (256 << 10) ? (256 << 10) : group;
}

// Prefetch policies of the dot4 kernels, stepped once per 16 elements (k) of the 4 rows.
// LinearPrefetch: a contiguous range (the rows of a gemv chunk), kLines lines per step.
struct LinearPrefetch {
  const unsigned char* pf;
  const unsigned char* end;
  template <int kLines>
  HIRE_AVX2 inline void step(int64_t) {
    if (pf < end) {
      for (int l = 0; l < kLines; ++l) prefetch_weights(pf + 64 * l);
      pf += 64 * kLines;
    }
  }
};

// RowsPrefetch: 4 other rows (the next selected rows of gemv_rows) walked one after the other,
// kLines lines per step like LinearPrefetch, i.e. as if they were contiguous: each row is fetched as
// one sequential burst, which DRAM serves much better than 4 interleaved streams. row == 4: done.
struct RowsPrefetch {
  const unsigned char* next[4];
  int64_t row_bytes;
  int row = 4;
  int64_t off = 0;
  template <int kLines>
  HIRE_AVX2 inline void step(int64_t) {
    for (int l = 0; l < kLines && row < 4; ++l) {
      prefetch_weights(next[row] + off);
      off += 64;
      if (off >= row_bytes) {
        off = 0;
        ++row;
      }
    }
  }
};

template <int DT, class Pf>
HIRE_AVX2 inline void dot4(const unsigned char* w0, const unsigned char* w1, const unsigned char* w2,
                           const unsigned char* w3, const float* x, int64_t K, float* out, Pf& pf) {
  constexpr int kLines = DT == kF32 ? 4 : 2;  // cache lines of the 4 rows consumed per iteration
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    pf.template step<kLines>(k);
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    a0 = _mm256_fmadd_ps(ld8<DT>(w0, k), x0, a0);
    a1 = _mm256_fmadd_ps(ld8<DT>(w0, k + 8), x1, a1);
    a2 = _mm256_fmadd_ps(ld8<DT>(w1, k), x0, a2);
    a3 = _mm256_fmadd_ps(ld8<DT>(w1, k + 8), x1, a3);
    a4 = _mm256_fmadd_ps(ld8<DT>(w2, k), x0, a4);
    a5 = _mm256_fmadd_ps(ld8<DT>(w2, k + 8), x1, a5);
    a6 = _mm256_fmadd_ps(ld8<DT>(w3, k), x0, a6);
    a7 = _mm256_fmadd_ps(ld8<DT>(w3, k + 8), x1, a7);
  }
  if (k + 8 <= K) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(ld8<DT>(w0, k), x0, a0);
    a2 = _mm256_fmadd_ps(ld8<DT>(w1, k), x0, a2);
    a4 = _mm256_fmadd_ps(ld8<DT>(w2, k), x0, a4);
    a6 = _mm256_fmadd_ps(ld8<DT>(w3, k), x0, a6);
    k += 8;
  }
  float r[4];
  _mm_storeu_ps(r, hsum4(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3), _mm256_add_ps(a4, a5),
                         _mm256_add_ps(a6, a7)));
  for (; k < K; ++k) {
    const float xk = x[k];
    r[0] = std::fmaf(load_elem(DT, w0, k), xk, r[0]);
    r[1] = std::fmaf(load_elem(DT, w1, k), xk, r[1]);
    r[2] = std::fmaf(load_elem(DT, w2, k), xk, r[2]);
    r[3] = std::fmaf(load_elem(DT, w3, k), xk, r[3]);
  }
  out[0] = r[0];
  out[1] = r[1];
  out[2] = r[2];
  out[3] = r[3];
}

// bf16 rows, 4 at a time, reading 32 bytes per row per step: the low halves of each 32-bit lane
// (even elements) become f32 by a shift, the high halves (odd elements) by a mask, so x is used
// de-interleaved (xp: per 16 elements, 8 even then 8 odd).
template <class Pf>
HIRE_AVX2 inline void dot4_bf16(const unsigned char* w0, const unsigned char* w1, const unsigned char* w2,
                                const unsigned char* w3, const float* x, const float* xp, int64_t K, float* out,
                                Pf& pf) {
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    pf.template step<2>(k);
    const __m256 xe = _mm256_loadu_ps(xp + k), xo = _mm256_loadu_ps(xp + k + 8);
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + 2 * k));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + 2 * k));
    const __m256i v2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w2 + 2 * k));
    const __m256i v3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w3 + 2 * k));
    a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), xe, a0);
    a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, hi)), xo, a1);
    a2 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), xe, a2);
    a3 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, hi)), xo, a3);
    a4 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v2, 16)), xe, a4);
    a5 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v2, hi)), xo, a5);
    a6 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v3, 16)), xe, a6);
    a7 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v3, hi)), xo, a7);
  }
  if (k + 8 <= K) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(ld8<kBF16>(w0, k), x0, a0);
    a2 = _mm256_fmadd_ps(ld8<kBF16>(w1, k), x0, a2);
    a4 = _mm256_fmadd_ps(ld8<kBF16>(w2, k), x0, a4);
    a6 = _mm256_fmadd_ps(ld8<kBF16>(w3, k), x0, a6);
    k += 8;
  }
  float r[4];
  _mm_storeu_ps(r, hsum4(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3), _mm256_add_ps(a4, a5),
                         _mm256_add_ps(a6, a7)));
  for (; k < K; ++k) {
    const float xk = x[k];
    r[0] = std::fmaf(load_elem(kBF16, w0, k), xk, r[0]);
    r[1] = std::fmaf(load_elem(kBF16, w1, k), xk, r[1]);
    r[2] = std::fmaf(load_elem(kBF16, w2, k), xk, r[2]);
    r[3] = std::fmaf(load_elem(kBF16, w3, k), xk, r[3]);
  }
  out[0] = r[0];
  out[1] = r[1];
  out[2] = r[2];
  out[3] = r[3];
}

// xp = x de-interleaved for dot4_bf16: per 16 elements, the 8 even ones then the 8 odd ones.
HIRE_AVX2 inline void deinterleave_x(const float* x, int64_t K, float* xp) {
  const int64_t K16 = K & ~int64_t{15};
  for (int64_t k = 0; k < K16; k += 16)
    for (int j = 0; j < 8; ++j) {
      xp[k + j] = x[k + 2 * j];
      xp[k + 8 + j] = x[k + 2 * j + 1];
    }
}

HIRE_AVX2 void gemv_bf16(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float* xp) {
  const int64_t K = w.cols;
  deinterleave_x(x, K, xp);
  const size_t stride = static_cast<size_t>(K) * 2;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const unsigned char* pf_end = base + r1 * stride;
  const int64_t pfd = prefetch_distance(stride);
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const unsigned char* p = base + r * stride;
    LinearPrefetch pf{p + pfd, pf_end};
    dot4_bf16(p, p + stride, p + 2 * stride, p + 3 * stride, x, xp, K, y + r, pf);
  }
  for (; r < r1; ++r) {
    const unsigned char* p = base + r * stride;
    float tmp[4];
    LinearPrefetch pf{pf_end, pf_end};
    dot4_bf16(p, p, p, p, x, xp, K, tmp, pf);
    y[r] = tmp[0];
  }
}

template <int DT>
HIRE_AVX2 void gemv_dt(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols;
  const size_t stride = static_cast<size_t>(K) * dtype_size(DT);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const unsigned char* pf_end = base + r1 * stride;
  const int64_t pfd = prefetch_distance(stride);
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const unsigned char* p = base + r * stride;
    LinearPrefetch pf{p + pfd, pf_end};
    dot4<DT>(p, p + stride, p + 2 * stride, p + 3 * stride, x, K, y + r, pf);
  }
  for (; r < r1; ++r) {
    const unsigned char* p = base + r * stride;
    float tmp[4];
    LinearPrefetch pf{pf_end, pf_end};
    dot4<DT>(p, p, p, p, x, K, tmp, pf);
    y[r] = tmp[0];
  }
}

HIRE_AVX2 void a_gemv(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float* scratch) {
  if (w.dtype == kF32) {
    gemv_dt<kF32>(w, x, y, r0, r1);
  } else if (w.dtype == kF16) {
    gemv_dt<kF16>(w, x, y, r0, r1);
  } else {
    gemv_bf16(w, x, y, r0, r1, scratch);
  }
}

// Column blocks of the selected-columns kernels (acc_cols_*): up to this many output rows accumulate
// in an L1-resident block per pass.
constexpr int64_t kColBlock = 4096;

// ---- HiRE sparse: selected rows and selected columns ---------------------------------------------

struct NoPrefetch {
  template <int kLines>
  HIRE_AVX2 inline void step(int64_t) {}
};

// y[i] = dot(W[idx[i]], x) with the dot4 kernels of gemv (so each y[i] is bitwise the gemv result of
// that row), 4 selected rows at a time. While it reads a group it prefetches, at the same offsets, the
// group `ahead` rows later (at least 8 KiB ahead): the rows are scattered, so no linear stream exists
// for the hardware prefetcher beyond each row.
template <int DT>
HIRE_AVX2 void gemv_rows_dt(const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1, float* y,
                            const float* xp) {
  constexpr int ES = DT == kF32 ? 4 : 2;
  const int64_t K = w.cols;
  const int64_t stride = K * ES;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const int64_t ahead = 4 * ((8192 + 4 * stride - 1) / (4 * stride));
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const unsigned char* p0 = base + idx[i] * stride;
    const unsigned char* p1 = base + idx[i + 1] * stride;
    const unsigned char* p2 = base + idx[i + 2] * stride;
    const unsigned char* p3 = base + idx[i + 3] * stride;
    RowsPrefetch pf{{p0, p1, p2, p3}, stride};
    if (i + ahead + 4 <= i1) {
      for (int j = 0; j < 4; ++j) pf.next[j] = base + idx[i + ahead + j] * stride;
      pf.row = 0;
    }
    if constexpr (DT == kBF16) {
      dot4_bf16(p0, p1, p2, p3, x, xp, K, y + i, pf);
    } else {
      dot4<DT>(p0, p1, p2, p3, x, K, y + i, pf);
    }
  }
  for (; i < i1; ++i) {
    const unsigned char* p = base + idx[i] * stride;
    float tmp[4];
    NoPrefetch pf;
    if constexpr (DT == kBF16) {
      dot4_bf16(p, p, p, p, x, xp, K, tmp, pf);
    } else {
      dot4<DT>(p, p, p, p, x, K, tmp, pf);
    }
    y[i] = tmp[0];
  }
}

HIRE_AVX2 void a_gemv_rows(const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1, float* y,
                           float* scratch) {
  if (w.dtype == kF32) {
    gemv_rows_dt<kF32>(w, x, idx, i0, i1, y, nullptr);
  } else if (w.dtype == kF16) {
    gemv_rows_dt<kF16>(w, x, idx, i0, i1, y, nullptr);
  } else {
    deinterleave_x(x, w.cols, scratch);
    gemv_rows_dt<kBF16>(w, x, idx, i0, i1, y, scratch);
  }
}

// Selected columns of a transposed W (memory [cols][rows], so a column is a contiguous memory row):
// 8 selected columns per pass over an L1-resident block of y, each y summed in idx order, prefetching
// the columns `ahead` positions later at the same offsets (>= 8 KiB ahead). With idx = 0..K-1 this is
// the transposed GEMV (ops.cc runs it through accumulate_cols).
template <int DT>
HIRE_AVX2 inline __m256 fma8_ptrs(const unsigned char* const* p, const __m256* b, int64_t c, __m256 acc) {
  for (int j = 0; j < 8; ++j) acc = _mm256_fmadd_ps(b[j], ld8<DT>(p[j], c), acc);
  return acc;
}

template <int DT>
HIRE_AVX2 void acc_cols_dt(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y, int64_t c0,
                           int64_t c1) {
  constexpr int64_t es = DT == kF32 ? 4 : 2;
  constexpr int64_t kLineCols = 64 / es;
  const int64_t rb = w.rows * es;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  for (int64_t cb = c0; cb < c1; cb += kColBlock) {
    const int64_t ce = cb + kColBlock < c1 ? cb + kColBlock : c1;
    for (int64_t c = cb; c < ce; ++c) y[c] = 0.0f;
    const int64_t seg = (ce - cb) * es;
    const int64_t ahead = ((8192 + seg - 1) / seg + 7) & ~int64_t{7};
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
      const unsigned char* p[8];
      const unsigned char* q[8];
      __m256 b[8];
      const bool pf = i + ahead + 8 <= count;
      for (int j = 0; j < 8; ++j) {
        p[j] = base + idx[i + j] * rb;
        q[j] = pf ? base + idx[i + ahead + j] * rb : nullptr;
        b[j] = _mm256_set1_ps(a[i + j]);
      }
      int64_t c = cb;
      for (; c + kLineCols <= ce; c += kLineCols) {
        if (pf) {
          for (int j = 0; j < 8; ++j) prefetch_weights(q[j] + c * es);
        }
        for (int64_t u = 0; u < kLineCols; u += 8)
          _mm256_storeu_ps(y + c + u, fma8_ptrs<DT>(p, b, c + u, _mm256_loadu_ps(y + c + u)));
      }
      for (; c + 8 <= ce; c += 8) _mm256_storeu_ps(y + c, fma8_ptrs<DT>(p, b, c, _mm256_loadu_ps(y + c)));
      for (; c < ce; ++c) {
        float acc = y[c];
        for (int j = 0; j < 8; ++j) acc = std::fmaf(a[i + j], load_elem(DT, p[j], c), acc);
        y[c] = acc;
      }
    }
    for (; i < count; ++i) {
      const unsigned char* p0 = base + idx[i] * rb;
      const __m256 b0 = _mm256_set1_ps(a[i]);
      int64_t c = cb;
      for (; c + 8 <= ce; c += 8)
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(b0, ld8<DT>(p0, c), _mm256_loadu_ps(y + c)));
      for (; c < ce; ++c) y[c] = std::fmaf(a[i], load_elem(DT, p0, c), y[c]);
    }
  }
}

HIRE_AVX2 inline void fma8_bf16_ptrs(const unsigned char* const* p, const __m256* b, int64_t c, float* acc) {
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 e = _mm256_loadu_ps(acc), o = _mm256_loadu_ps(acc + 8);
  for (int j = 0; j < 8; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p[j] + 2 * c));
    e = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), e);
    o = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_and_si256(v, hi)), o);
  }
  _mm256_storeu_ps(acc, e);
  _mm256_storeu_ps(acc + 8, o);
}

// 64 elements of y (4 de-interleaved 16-blocks, 8 independent chains) from 8 selected columns: the
// same per-element fma order as fma8_bf16_ptrs, with 4x the instruction-level parallelism.
HIRE_AVX2 inline void fma8x4_bf16_ptrs(const unsigned char* const* p, const __m256* b, int64_t c, float* acc) {
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 e0 = _mm256_loadu_ps(acc), o0 = _mm256_loadu_ps(acc + 8);
  __m256 e1 = _mm256_loadu_ps(acc + 16), o1 = _mm256_loadu_ps(acc + 24);
  __m256 e2 = _mm256_loadu_ps(acc + 32), o2 = _mm256_loadu_ps(acc + 40);
  __m256 e3 = _mm256_loadu_ps(acc + 48), o3 = _mm256_loadu_ps(acc + 56);
  for (int j = 0; j < 8; ++j) {
    const __m256i* q = reinterpret_cast<const __m256i*>(p[j] + 2 * c);
    const __m256i v0 = _mm256_loadu_si256(q), v1 = _mm256_loadu_si256(q + 1);
    const __m256i v2 = _mm256_loadu_si256(q + 2), v3 = _mm256_loadu_si256(q + 3);
    e0 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), e0);
    o0 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_and_si256(v0, hi)), o0);
    e1 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), e1);
    o1 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_and_si256(v1, hi)), o1);
    e2 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_slli_epi32(v2, 16)), e2);
    o2 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_and_si256(v2, hi)), o2);
    e3 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_slli_epi32(v3, 16)), e3);
    o3 = _mm256_fmadd_ps(b[j], _mm256_castsi256_ps(_mm256_and_si256(v3, hi)), o3);
  }
  _mm256_storeu_ps(acc, e0);
  _mm256_storeu_ps(acc + 8, o0);
  _mm256_storeu_ps(acc + 16, e1);
  _mm256_storeu_ps(acc + 24, o1);
  _mm256_storeu_ps(acc + 32, e2);
  _mm256_storeu_ps(acc + 40, o2);
  _mm256_storeu_ps(acc + 48, e3);
  _mm256_storeu_ps(acc + 56, o3);
}

// bf16: a de-interleaved accumulator (per 16 rows of y: 8 even then 8 odd, the even ones by shift,
// the odd ones by mask), un-permuted at the end of each block.
HIRE_AVX2 void acc_cols_bf16(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y, int64_t c0,
                             int64_t c1) {
  const int64_t rb = w.rows * 2;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  alignas(32) float acc[kColBlock];
  for (int64_t cb = c0; cb < c1; cb += kColBlock) {
    const int64_t ce = cb + kColBlock < c1 ? cb + kColBlock : c1;
    const int64_t ce16 = cb + ((ce - cb) & ~int64_t{15});
    if (ce16 < ce) acc_cols_dt<kBF16>(w, a, idx, count, y, ce16, ce);
    if (ce16 == cb) continue;
    const int64_t nb = ce16 - cb;
    for (int64_t c = 0; c < nb; ++c) acc[c] = 0.0f;
    const int64_t ahead = ((8192 + 2 * nb - 1) / (2 * nb) + 7) & ~int64_t{7};
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
      const unsigned char* p[8];
      const unsigned char* q[8];
      __m256 b[8];
      const bool pf = i + ahead + 8 <= count;
      for (int j = 0; j < 8; ++j) {
        p[j] = base + idx[i + j] * rb + 2 * cb;
        q[j] = pf ? base + idx[i + ahead + j] * rb + 2 * cb : nullptr;
        b[j] = _mm256_set1_ps(a[i + j]);
      }
      int64_t c = 0;
      for (; c + 64 <= nb; c += 64) {
        if (pf) {
          for (int j = 0; j < 8; ++j) {
            prefetch_weights(q[j] + 2 * c);
            prefetch_weights(q[j] + 2 * c + 64);
          }
        }
        fma8x4_bf16_ptrs(p, b, c, acc + c);
      }
      for (; c < nb; c += 16) {
        if (pf && (c & 31) == 0) {
          for (int j = 0; j < 8; ++j) prefetch_weights(q[j] + 2 * c);
        }
        fma8_bf16_ptrs(p, b, c, acc + c);
      }
    }
    for (; i < count; ++i) {
      const unsigned char* p = base + idx[i] * rb + 2 * cb;
      const __m256 b0 = _mm256_set1_ps(a[i]);
      for (int64_t c = 0; c < nb; c += 16) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * c));
        _mm256_storeu_ps(acc + c, _mm256_fmadd_ps(b0, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                                                  _mm256_loadu_ps(acc + c)));
        _mm256_storeu_ps(acc + c + 8, _mm256_fmadd_ps(b0, _mm256_castsi256_ps(_mm256_and_si256(v, hi)),
                                                      _mm256_loadu_ps(acc + c + 8)));
      }
    }
    for (int64_t c = 0; c < nb; c += 16) {
      const __m256 e = _mm256_loadu_ps(acc + c), o = _mm256_loadu_ps(acc + c + 8);
      const __m256 lo = _mm256_unpacklo_ps(e, o), hi2 = _mm256_unpackhi_ps(e, o);
      _mm256_storeu_ps(y + cb + c, _mm256_permute2f128_ps(lo, hi2, 0x20));
      _mm256_storeu_ps(y + cb + c + 8, _mm256_permute2f128_ps(lo, hi2, 0x31));
    }
  }
}

HIRE_AVX2 void a_accumulate_cols(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y,
                                 int64_t r0, int64_t r1) {
  if (w.dtype == kF32) {
    acc_cols_dt<kF32>(w, a, idx, count, y, r0, r1);
  } else if (w.dtype == kF16) {
    acc_cols_dt<kF16>(w, a, idx, count, y, r0, r1);
  } else {
    acc_cols_bf16(w, a, idx, count, y, r0, r1);
  }
}

// ---- GEMM (prefill, n > 1) -----------------------------------------------------------------------

HIRE_AVX2 inline void transpose8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5,
                                 __m256& r6, __m256& r7) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r0 = _mm256_permute2f128_ps(s0, s4, 0x20);
  r1 = _mm256_permute2f128_ps(s1, s5, 0x20);
  r2 = _mm256_permute2f128_ps(s2, s6, 0x20);
  r3 = _mm256_permute2f128_ps(s3, s7, 0x20);
  r4 = _mm256_permute2f128_ps(s0, s4, 0x31);
  r5 = _mm256_permute2f128_ps(s1, s5, 0x31);
  r6 = _mm256_permute2f128_ps(s2, s6, 0x31);
  r7 = _mm256_permute2f128_ps(s3, s7, 0x31);
}

template <int DT>
HIRE_AVX2 inline __m256 ld8_or_zero(const unsigned char* row, int64_t k) {
  return row ? ld8<DT>(row, k) : _mm256_setzero_ps();
}

template <int DT>
HIRE_AVX2 void pack_dt(const Mat& w, int64_t r0, int64_t nr, float* panel) {
  const int64_t K = w.cols;
  const size_t es = dtype_size(DT);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  if (w.transposed) {
    // Memory [K][rows]: panel row k is 16 contiguous elements.
    const size_t row_bytes = static_cast<size_t>(w.rows) * es;
    for (int64_t k = 0; k < K; ++k) {
      const unsigned char* src = base + k * row_bytes + r0 * es;
      float* dst = panel + k * kPanel;
      if (nr == kPanel) {
        _mm256_store_ps(dst, ld8<DT>(src, 0));
        _mm256_store_ps(dst + 8, ld8<DT>(src, 8));
      } else {
        for (int64_t j = 0; j < kPanel; ++j) dst[j] = j < nr ? load_elem(DT, src, j) : 0.0f;
      }
    }
    return;
  }
  // Memory [rows][K]: transpose 8 rows x 8 k at a time.
  const size_t row_bytes = static_cast<size_t>(K) * es;
  for (int64_t h = 0; h < kPanel; h += 8) {
    const unsigned char* rp[8];
    for (int i = 0; i < 8; ++i) rp[i] = h + i < nr ? base + (r0 + h + i) * row_bytes : nullptr;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 v0 = ld8_or_zero<DT>(rp[0], k), v1 = ld8_or_zero<DT>(rp[1], k);
      __m256 v2 = ld8_or_zero<DT>(rp[2], k), v3 = ld8_or_zero<DT>(rp[3], k);
      __m256 v4 = ld8_or_zero<DT>(rp[4], k), v5 = ld8_or_zero<DT>(rp[5], k);
      __m256 v6 = ld8_or_zero<DT>(rp[6], k), v7 = ld8_or_zero<DT>(rp[7], k);
      transpose8(v0, v1, v2, v3, v4, v5, v6, v7);
      float* dst = panel + k * kPanel + h;
      _mm256_store_ps(dst, v0);
      _mm256_store_ps(dst + kPanel, v1);
      _mm256_store_ps(dst + 2 * kPanel, v2);
      _mm256_store_ps(dst + 3 * kPanel, v3);
      _mm256_store_ps(dst + 4 * kPanel, v4);
      _mm256_store_ps(dst + 5 * kPanel, v5);
      _mm256_store_ps(dst + 6 * kPanel, v6);
      _mm256_store_ps(dst + 7 * kPanel, v7);
    }
    for (; k < K; ++k)
      for (int i = 0; i < 8; ++i) panel[k * kPanel + h + i] = rp[i] ? load_elem(DT, rp[i], k) : 0.0f;
  }
}

HIRE_AVX2 void a_pack_panel(const Mat& w, int64_t r0, int64_t nr, float* panel) {
  if (w.dtype == kF32) {
    pack_dt<kF32>(w, r0, nr, panel);
  } else if (w.dtype == kF16) {
    pack_dt<kF16>(w, r0, nr, panel);
  } else {
    pack_dt<kBF16>(w, r0, nr, panel);
  }
}

// NT tokens x 16 outputs: 2*NT accumulators, per k two panel loads and NT broadcasts.
template <int NT>
HIRE_AVX2 void micro(const float* x, int64_t ldx, const float* panel, int64_t K, const float* bias16,
                     float* y, int64_t ldy, int64_t nr) {
  __m256 acc0[NT], acc1[NT];
  const float* xp[NT];
#pragma GCC unroll 6
  for (int t = 0; t < NT; ++t) {
    acc0[t] = _mm256_setzero_ps();
    acc1[t] = _mm256_setzero_ps();
    xp[t] = x + t * ldx;
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_load_ps(panel + k * kPanel);
    const __m256 w1 = _mm256_load_ps(panel + k * kPanel + 8);
#pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) {
      const __m256 xv = _mm256_broadcast_ss(xp[t] + k);
      acc0[t] = _mm256_fmadd_ps(xv, w0, acc0[t]);
      acc1[t] = _mm256_fmadd_ps(xv, w1, acc1[t]);
    }
  }
  const __m256 b0 = _mm256_loadu_ps(bias16), b1 = _mm256_loadu_ps(bias16 + 8);
#pragma GCC unroll 6
  for (int t = 0; t < NT; ++t) {
    const __m256 r0 = _mm256_add_ps(acc0[t], b0), r1 = _mm256_add_ps(acc1[t], b1);
    float* yt = y + t * ldy;
    if (nr == kPanel) {
      _mm256_storeu_ps(yt, r0);
      _mm256_storeu_ps(yt + 8, r1);
    } else {
      float tmp[kPanel];
      _mm256_storeu_ps(tmp, r0);
      _mm256_storeu_ps(tmp + 8, r1);
      for (int64_t j = 0; j < nr; ++j) yt[j] = tmp[j];
    }
  }
}

HIRE_AVX2 void a_gemm_panel(const float* x, int64_t ldx, int64_t nt, const float* panel, int64_t K,
                            const float* bias16, float* y, int64_t ldy, int64_t nr) {
  int64_t t = 0;
  for (; t + kTokBlock <= nt; t += kTokBlock)
    micro<kTokBlock>(x + t * ldx, ldx, panel, K, bias16, y + t * ldy, ldy, nr);
  const float* xt = x + t * ldx;
  float* yt = y + t * ldy;
  switch (nt - t) {
    case 5: micro<5>(xt, ldx, panel, K, bias16, yt, ldy, nr); break;
    case 4: micro<4>(xt, ldx, panel, K, bias16, yt, ldy, nr); break;
    case 3: micro<3>(xt, ldx, panel, K, bias16, yt, ldy, nr); break;
    case 2: micro<2>(xt, ldx, panel, K, bias16, yt, ldy, nr); break;
    case 1: micro<1>(xt, ldx, panel, K, bias16, yt, ldy, nr); break;
    default: break;
  }
}

HIRE_AVX2 void a_gemm_panels(const float* x, int64_t ldx, int64_t nt, const float* panels, int np, int64_t K,
                             const float* bias, float* y, int64_t ldy, int64_t nr) {
  each_panel(a_gemm_panel, x, ldx, nt, panels, np, K, bias, y, ldy, nr);
}

// ---- row ops -------------------------------------------------------------------------------------

constexpr int64_t kBlock = 256;  // vector-weight elements converted per step

HIRE_AVX2 float sum_sq(const float* x, int64_t dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= dim; i += 32) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
    a2 = _mm256_fmadd_ps(v2, v2, a2);
    a3 = _mm256_fmadd_ps(v3, v3, a3);
  }
  for (; i < dim; i += 8) {
    const __m256 v = _mm256_maskload_ps(x + i, tail_mask(dim - i));
    a0 = _mm256_fmadd_ps(v, v, a0);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

HIRE_AVX2 void a_rms_norm_row(float* y, const float* x, const void* g, int gdt, int64_t dim, float eps) {
  const float inv = 1.0f / std::sqrt(sum_sq(x, dim) / static_cast<float>(dim) + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  float gb[kBlock];
  const size_t es = dtype_size(gdt);
  for (int64_t j0 = 0; j0 < dim; j0 += kBlock) {
    const int64_t len = dim - j0 < kBlock ? dim - j0 : kBlock;
    a_to_f32(gdt, static_cast<const unsigned char*>(g) + j0 * es, len, gb);
    for (int64_t j = 0; j < len; j += 8) {
      const __m256i m = tail_mask(len - j);
      const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x + j0 + j, m), vinv),
                                     _mm256_maskload_ps(gb + j, m));
      _mm256_maskstore_ps(y + j0 + j, m, v);
    }
  }
}

HIRE_AVX2 void a_layer_norm_row(float* y, const float* x, const void* g, int gdt, const void* b, int bdt,
                                int64_t dim, float eps) {
  __m256 s = _mm256_setzero_ps();
  for (int64_t i = 0; i < dim; i += 8) s = _mm256_add_ps(s, _mm256_maskload_ps(x + i, tail_mask(dim - i)));
  const float mean = hsum(s) / static_cast<float>(dim);
  const __m256 vmean = _mm256_set1_ps(mean);
  __m256 v = _mm256_setzero_ps();
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256i m = tail_mask(dim - i);
    const __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmean), _mm256_castsi256_ps(m));
    v = _mm256_fmadd_ps(d, d, v);
  }
  const float inv = 1.0f / std::sqrt(hsum(v) / static_cast<float>(dim) + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  float gb[kBlock], bb[kBlock];
  for (int64_t j0 = 0; j0 < dim; j0 += kBlock) {
    const int64_t len = dim - j0 < kBlock ? dim - j0 : kBlock;
    a_to_f32(gdt, static_cast<const unsigned char*>(g) + j0 * dtype_size(gdt), len, gb);
    a_to_f32(bdt, static_cast<const unsigned char*>(b) + j0 * dtype_size(bdt), len, bb);
    for (int64_t j = 0; j < len; j += 8) {
      const __m256i m = tail_mask(len - j);
      const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + j0 + j, m), vmean), vinv);
      const __m256 r = _mm256_fmadd_ps(d, _mm256_maskload_ps(gb + j, m), _mm256_maskload_ps(bb + j, m));
      _mm256_maskstore_ps(y + j0 + j, m, r);
    }
  }
}

HIRE_AVX2 void a_softmax_row(float* x, int64_t dim) {
  if (dim <= 0) return;
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx = ninf;
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256i m = tail_mask(dim - i);
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m)));
  }
  const __m256 vmax = _mm256_set1_ps(hmax(mx));
  __m256 s = _mm256_setzero_ps();
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256i m = tail_mask(dim - i);
    const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmax)),
                                   _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    s = _mm256_add_ps(s, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(s));
  for (int64_t i = 0; i < dim; i += 8) {
    const __m256i m = tail_mask(dim - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
  }
}

HIRE_AVX2 void a_silu_mul(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; i += 8) {
    const __m256i m = tail_mask(count - i);
    const __m256 g = silu256(_mm256_maskload_ps(gate + i, m));
    _mm256_maskstore_ps(gate + i, m, _mm256_mul_ps(g, _mm256_maskload_ps(up + i, m)));
  }
}

HIRE_AVX2 void a_activate(float* x, int64_t count, int kind) {
  for (int64_t i = 0; i < count; i += 8) {
    const __m256i m = tail_mask(count - i);
    const __m256 v = _mm256_maskload_ps(x + i, m);
    __m256 r;
    switch (kind) {
      case 0: r = _mm256_max_ps(v, _mm256_setzero_ps()); break;
      case 1: r = gelu_erf256(v); break;
      case 2: r = gelu_tanh256(v); break;
      default: r = silu256(v); break;
    }
    _mm256_maskstore_ps(x + i, m, r);
  }
}

HIRE_AVX2 void a_add(float* y, const float* x, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  for (; i < count; ++i) y[i] += x[i];
}

HIRE_AVX2 void a_rope_token(float* x, int64_t n_heads, int64_t head_dim, const float* cs, const float* sn,
                            int64_t half) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* a = x + h * head_dim;
    float* b = a + half;
    int64_t j = 0;
    for (; j + 8 <= half; j += 8) {
      const __m256 x1 = _mm256_loadu_ps(a + j), x2 = _mm256_loadu_ps(b + j);
      const __m256 c = _mm256_loadu_ps(cs + j), s = _mm256_loadu_ps(sn + j);
      _mm256_storeu_ps(a + j, _mm256_fmsub_ps(x1, c, _mm256_mul_ps(x2, s)));
      _mm256_storeu_ps(b + j, _mm256_fmadd_ps(x2, c, _mm256_mul_ps(x1, s)));
    }
    for (; j < half; ++j) {
      const float x1 = a[j], x2 = b[j];
      a[j] = std::fmaf(x1, cs[j], -(x2 * sn[j]));
      b[j] = std::fmaf(x2, cs[j], x1 * sn[j]);
    }
  }
}

// ---- attention -----------------------------------------------------------------------------------

// [sum(v[0]), ..., sum(v[7])].
HIRE_AVX2 inline __m256 hsum8(const __m256* v) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// 8 values of a key or value row from value 8 * i on: floats, or halves (an f16 cache) widened.
template <bool F16>
HIRE_AVX2 inline __m256 ld_kv(const unsigned char* row, int64_t i) {
  if constexpr (F16) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row) + i));
  return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + 8 * i);
}

// Chunks [c0, c0 + SL) (8 values each) of H heads' accumulators, plus the n live positions' values
// weighted by p (H x 16 exponentials): each value chunk is loaded once for the H heads.
template <int H, int SL, bool F16>
HIRE_AVX2 inline void attn_values(float* out, int64_t d, const unsigned char* const* v, int64_t n, const float (*p)[16],
                                  const float* rescale, int64_t c0) {
  __m256 acc[H][SL];
  for (int h = 0; h < H; ++h) {
    const __m256 c = _mm256_set1_ps(rescale[h]);
    for (int i = 0; i < SL; ++i) acc[h][i] = _mm256_mul_ps(_mm256_loadu_ps(out + h * (d + 2) + 2 + 8 * (c0 + i)), c);
  }
  for (int64_t u = 0; u < n; ++u) {
    __m256 pb[H];
    for (int h = 0; h < H; ++h) pb[h] = _mm256_broadcast_ss(&p[h][u]);
    for (int i = 0; i < SL; ++i) {
      const __m256 vc = ld_kv<F16>(v[u], c0 + i);
      for (int h = 0; h < H; ++h) acc[h][i] = _mm256_fmadd_ps(pb[h], vc, acc[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < SL; ++i) _mm256_storeu_ps(out + h * (d + 2) + 2 + 8 * (c0 + i), acc[h][i]);
}

// H heads of a group over one block of 16 positions (n of them live), head_dim d a multiple of 8:
// scores (each key chunk loaded once for the H heads; 8 dot products at a time summed by hsum8), per
// head the running max raised if the block beats it (its sum and acc rescaled), then the values in
// slices of 8 / H chunks, so that the H heads' accumulators fit the 16 registers. out: the first
// head's [m, l, acc], heads d + 2 floats apart.
template <int H, bool F16>
HIRE_AVX2 inline void attn_heads_block(const float* q, int64_t d, const unsigned char* const* k,
                                       const unsigned char* const* v, int64_t n, float* out, float scale,
                                       float softcap) {
  constexpr int KB = 8 / H;  // keys per round: H heads x KB keys fill hsum8's 8 sums
  alignas(32) float sc[H][16];
  for (int r = 0; r < 2 * H; ++r) {
    __m256 dot[8];
    for (int a = 0; a < 8; ++a) dot[a] = _mm256_setzero_ps();
    for (int64_t i = 0; i < d; i += 8) {
      if constexpr (H == 1) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        for (int u = 0; u < 8; ++u) dot[u] = _mm256_fmadd_ps(qv, ld_kv<F16>(k[8 * r + u], i / 8), dot[u]);
      } else {
        __m256 kc[KB];
        for (int u = 0; u < KB; ++u) kc[u] = ld_kv<F16>(k[r * KB + u], i / 8);
        for (int h = 0; h < H; ++h) {
          const __m256 qv = _mm256_loadu_ps(q + h * d + i);
          for (int u = 0; u < KB; ++u) dot[h * KB + u] = _mm256_fmadd_ps(qv, kc[u], dot[h * KB + u]);
        }
      }
    }
    alignas(32) float t[8];
    _mm256_store_ps(t, _mm256_mul_ps(hsum8(dot), _mm256_set1_ps(scale)));
    for (int h = 0; h < H; ++h)
      for (int u = 0; u < KB; ++u) sc[h][r * KB + u] = t[h * KB + u];
  }
  const __m256 live0 = _mm256_castsi256_ps(tail_mask(n)), live1 = _mm256_castsi256_ps(tail_mask(n - 8));
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  float rescale[H];
  for (int h = 0; h < H; ++h) {
    float* o = out + h * (d + 2);
    if (softcap > 0.0f)
      for (int u = 0; u < 16; ++u) sc[h][u] = softcap * std::tanh(sc[h][u] / softcap);
    const __m256 s0 = _mm256_blendv_ps(ninf, _mm256_load_ps(sc[h]), live0);
    const __m256 s1 = _mm256_blendv_ps(ninf, _mm256_load_ps(sc[h] + 8), live1);
    const float m_old = o[0], m = std::max(m_old, hmax(_mm256_max_ps(s0, s1)));
    const float c = m == m_old ? 1.0f : std::exp(m_old - m);  // 0 on the first block (m_old = -inf)
    const __m256 vm = _mm256_set1_ps(m);
    const __m256 e0 = _mm256_and_ps(exp256(_mm256_sub_ps(s0, vm)), live0);
    const __m256 e1 = _mm256_and_ps(exp256(_mm256_sub_ps(s1, vm)), live1);
    _mm256_store_ps(sc[h], e0);
    _mm256_store_ps(sc[h] + 8, e1);
    o[0] = m;
    o[1] = o[1] * c + hsum(_mm256_add_ps(e0, e1));
    rescale[h] = c;
  }
  constexpr int SL = 8 / H;
  const int64_t chunks = d / 8;
  int64_t c0 = 0;
  for (; c0 + SL <= chunks; c0 += SL) attn_values<H, SL, F16>(out, d, v, n, sc, rescale, c0);
  for (; c0 < chunks; ++c0) attn_values<H, 1, F16>(out, d, v, n, sc, rescale, c0);
}

// One pass over the range (flash-decoding style), 16 positions at a time: each block's keys and
// values are read from memory once for the whole group, its heads taken 4, 2 or 1 at a time, and
// nothing goes through a scores buffer (the AVX-512 kernel's design on 32-byte vectors). Against the
// three-pass kernel it replaced (scores, exponentials, values), builds alternated on the Zen 5 VM
// with this path forced, 16 layers at 4000 positions on 2 threads: head_dim 64 (Llama 3.2 1B)
// 14.7-17.7 -> 13.1-13.4 ms a token; head_dim 128 at 2000 positions unchanged (16.7-17.8).
// Head dims that are not a multiple of 8 use the portable kernel.
template <bool F16>
HIRE_AVX2 void attn_part_f(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group,
                           float scale, float softcap) {
  for (int64_t g = 0; g < group; ++g) {
    float* o = part + g * (d + 2);
    o[0] = -INFINITY;
    o[1] = 0.0f;
    for (int64_t i = 0; i < d; ++i) o[2 + i] = 0.0f;
  }
  const int64_t ahead = std::max<int64_t>(16, kAttnAheadBytes / (kv.elem_bytes() * d));  // rows
  for (int64_t j = 0; j < len; j += 16) {
    const int64_t n = std::min<int64_t>(16, len - j);
    kv.prefetch_keys(j + ahead, j + ahead + 16, len, d);
    kv.prefetch_values(j + ahead, j + ahead + 16, len, d);
    const unsigned char *k[16], *v[16];
    for (int64_t u = 0; u < 16; ++u) {
      k[u] = kv.key(j + (u < n ? u : 0), d);  // a ragged block repeats its first key; its lanes are masked
      v[u] = kv.value(j + (u < n ? u : 0), d);
    }
    int64_t g = 0;
    for (; g + 4 <= group; g += 4)
      attn_heads_block<4, F16>(q + g * d, d, k, v, n, part + g * (d + 2), scale, softcap);
    for (; g + 2 <= group; g += 2)
      attn_heads_block<2, F16>(q + g * d, d, k, v, n, part + g * (d + 2), scale, softcap);
    for (; g < group; ++g) attn_heads_block<1, F16>(q + g * d, d, k, v, n, part + g * (d + 2), scale, softcap);
  }
}

HIRE_AVX2 void a_attn_part(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group,
                           float scale, float softcap, float* scores) {
  if (d % 8 != 0) return kPortableKernels.attn_part(part, q, kv, len, d, group, scale, softcap, scores);
  if (kv.f16) return attn_part_f<true>(part, q, kv, len, d, group, scale, softcap);
  attn_part_f<false>(part, q, kv, len, d, group, scale, softcap);
}

// ---- bandwidth probe -----------------------------------------------------------------------------

HIRE_AVX2 float a_read_sum(const float* p, size_t count) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= count; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < count; ++i) s += p[i];
  return s;
}

const KernelTable kAvx2Kernels = {
    "avx2",          a_gemv,       a_pack_panel,  a_gemm_panels, 1,
    a_to_f32,        a_rms_norm_row, a_layer_norm_row, a_softmax_row, a_silu_mul,
    a_activate,      a_add,        a_rope_token, a_attn_part,   a_read_sum,
    a_gemv_rows,     a_accumulate_cols, avx2_quant_gemv,
};

}  // namespace

const KernelTable* avx2_kernels() { return &kAvx2Kernels; }

}  // namespace hire

#else  // not x86-64 (or HIRE_PORTABLE_ONLY): portable kernels only

namespace hire {
const KernelTable* avx2_kernels() { return nullptr; }
}  // namespace hire

#endif
