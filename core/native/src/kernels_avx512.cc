// The avx512 KernelTable: the AVX2 table with the primitives that gain from 64-byte vectors on CPUs
// with AVX-512 (F, BW, VL, VNNI; picked at run time like the AVX2 path):
//   - bf16 GEMV and gathered-row GEMV (dense projections, attention, HiRE's exact rows). On the Intel
//     Xeon VMs two cores stream bf16 rows at 30-33 GB/s with one 64-byte load per cache line, against
//     25-26 with the AVX2 kernel's two 32-byte loads (see dot_bf16);
//   - the bandwidth probe's read_sum: the AVX2 one under-read this machine's bandwidth by about 14 %,
//     which overstated every "% of roofline" (see k_read_sum);
//   - the VNNI int4/int8 scoring GEMV (quant_avx512.cc);
//   - prefill's GEMM micro-kernel, for every dtype (it reads the f32 panels the AVX2 packing makes;
//     the same bits as the AVX2 micro-kernel, twice the lanes per FMA).
//   - attention over the KV cache (attn_part, f32 or f16 caches): one pass per range, the group's
//     heads in registers (see k_attn_part).
// Everything else, and f32/f16 GEMVs, stays on the AVX2 kernels. gemv's dot_bf16 and gemv_rows'
// dot2_bf16 sum a row the same way, so a gathered row equals its dense GEMV result (HiRE at k = 100 %
// equals dense).
#include "kernel_table.h"
#include "quant_kernels.h"

#if HIRE_X86_64

#include <immintrin.h>

#include <algorithm>
#include <cmath>

// GCC 12's AVX-512 headers build their "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports at every inlined use; the values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define HIRE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

namespace hire {
namespace {

// xp = x de-interleaved for dot_bf16: per 32 elements, the 16 even ones then the 16 odd ones.
HIRE_AVX512 void deinterleave_x32(const float* x, int64_t K, float* xp) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t k = 0; k + 32 <= K; k += 32) {
    const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
    _mm512_storeu_ps(xp + k, _mm512_permutex2var_ps(a, even, b));
    _mm512_storeu_ps(xp + k + 16, _mm512_permutex2var_ps(a, odd, b));
  }
}

// dot(w, x) for one bf16 row of K elements: each 32-bit lane holds an even element in its low half
// (to f32 by a shift) and an odd one in its high half (by a mask), so x is read de-interleaved (xp).
// One cache line per iteration, two accumulators; the line kLineAhead on is prefetched while it lies
// within pf_bytes of w (see kernel_table.h). On the Xeon VM a harness re-reading the same
// gathered 4 KiB rows (partly from its 480 MiB L3) read 27-30 GB/s this way against 24-27 for two
// lines per iteration with four accumulators; with fresh rows from 4.5 GB both read 26-27, and whole
// decode tokens showed no difference. Kept for the simpler loop.
HIRE_AVX512 inline float dot_bf16(const unsigned char* w, const float* x, const float* xp, int64_t K,
                                  int64_t pf_bytes) {
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    if (2 * k + kLineAhead < pf_bytes) prefetch_line(w + 2 * k + kLineAhead);
    const __m512i v = _mm512_loadu_si512(w + 2 * k);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), _mm512_loadu_ps(xp + k), a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), _mm512_loadu_ps(xp + k + 16), a1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  for (; k < K; ++k) s = std::fmaf(load_elem(kBF16, w, k), x[k], s);
  return s;
}

// Rows [r0, r1) of a chunk are one contiguous range: the page heads kAheadBytes (8 KiB) on are
// prefetched row by row (see prefetch_page_heads in kernel_table.h).
HIRE_AVX512 void gemv_bf16(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float* xp) {
  const int64_t K = w.cols, stride = 2 * K;
  deinterleave_x32(x, K, xp);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    const unsigned char* p = base + r * stride;
    const int64_t left = (r1 - r) * stride - kAheadBytes;  // bytes of the chunk past p + kAheadBytes
    if (left > 0) prefetch_page_heads(p + kAheadBytes, left < stride ? left : stride);
    y[r] = dot_bf16(p, x, xp, K, (r1 - r) * stride);
  }
}

HIRE_AVX512 void k_gemv(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float* scratch) {
  if (w.dtype != kBF16) return avx2_kernels()->gemv(w, x, y, r0, r1, scratch);
  gemv_bf16(w, x, y, r0, r1, scratch);
}

// Two rows at once, each summed exactly as dot_bf16 sums it (same accumulators, same order), so a
// gathered row still equals its dense GEMV result bit for bit.
HIRE_AVX512 inline void dot2_bf16(const unsigned char* w0, const unsigned char* w1, const float* x, const float* xp,
                                  int64_t K, float* y0, float* y1) {
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 xe = _mm512_loadu_ps(xp + k), xo = _mm512_loadu_ps(xp + k + 16);
    const __m512i v = _mm512_loadu_si512(w0 + 2 * k), u = _mm512_loadu_si512(w1 + 2 * k);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xe, a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), xo, a1);
    b0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u, 16)), xe, b0);
    b1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(u, hi)), xo, b1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)), t = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
  for (; k < K; ++k) {
    s = std::fmaf(load_elem(kBF16, w0, k), x[k], s);
    t = std::fmaf(load_elem(kBF16, w1, k), x[k], t);
  }
  *y0 = s;
  *y1 = t;
}

// Selected rows, two at a time read line by line side by side, with the page heads of the next two
// prefetched before each pair. Two interleaved streams whose prefetcher was started a pair early is
// what scattered rows read fastest: on the AMD EPYC (Zen 5) VM, a harness gathering one 8 KiB
// gate/up pair in five from 3 GiB read 48-50 GB/s this way against 34-38 for one row at a time with
// every line prefetched 32 KiB ahead (the previous kernel), 34-41 for four or eight rows side by side,
// and 56-58 streaming. A HiRE FFN's gated pairs (2c, 2c + 1) are adjacent rows, so each candidate's
// gate and up rows are the two streams.
HIRE_AVX512 void k_gemv_rows(const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1, float* y,
                             float* scratch) {
  if (w.dtype != kBF16) return avx2_kernels()->gemv_rows(w, x, idx, i0, i1, y, scratch);
  const int64_t K = w.cols, stride = 2 * K;
  deinterleave_x32(x, K, scratch);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  for (int64_t j = i0; j < std::min(i0 + 2, i1); ++j) prefetch_piece(base + idx[j] * stride, stride);
  int64_t i = i0;
  for (; i + 2 <= i1; i += 2) {
    for (int64_t j = i + 2; j < std::min(i + 4, i1); ++j) prefetch_piece(base + idx[j] * stride, stride);
    dot2_bf16(base + idx[i] * stride, base + idx[i + 1] * stride, x, scratch, K, y + i, y + i + 1);
  }
  if (i < i1) y[i] = dot_bf16(base + idx[i] * stride, x, scratch, K, stride);
}

// Selected columns of a transposed bf16 W (memory [cols][rows]), output rows [r0, r1): eight columns
// per pass over an accumulator of up to kAccRows rows, which holds each 32 rows as the 16 even then the
// 16 odd ones (the shift / mask split of dot_bf16) and is interleaved back into y at the end. Each
// pass starts with prefetch_piece on the next pass's eight columns. Ragged rows (r1 - r0 not a
// multiple of 32) go to the AVX2 kernel. The op calls it with whole columns (r0 = 0, r1 = rows), so
// each column is one contiguous read (see accumulate_cols in sparse_ops.cc). On 64-byte loads the
// down product took 8 % less time per token than with the AVX2 kernel.
constexpr int64_t kAccRows = 4096;

HIRE_AVX512 void acc_cols_bf16(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y, int64_t r0,
                               int64_t r1) {
  const int64_t rb = 2 * w.rows;
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  alignas(64) float acc[kAccRows];
  for (int64_t cb = r0; cb < r1; cb += kAccRows) {
    const int64_t ce = std::min(cb + kAccRows, r1);
    const int64_t nb = (ce - cb) & ~int64_t{31};
    if (cb + nb < ce) avx2_kernels()->accumulate_cols(w, a, idx, count, y, cb + nb, ce);
    if (nb == 0) continue;
    for (int64_t c = 0; c < nb; c += 16) _mm512_store_ps(acc + c, _mm512_setzero_ps());
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
      const unsigned char* p[8];
      __m512 b[8];
      for (int j = 0; j < 8; ++j) {
        p[j] = base + idx[i + j] * rb + 2 * cb;
        b[j] = _mm512_set1_ps(a[i + j]);
      }
      if (i + 16 <= count)
        for (int j = 0; j < 8; ++j) prefetch_piece(base + idx[i + 8 + j] * rb + 2 * cb, 2 * nb);
      for (int64_t c = 0; c < nb; c += 32) {
        __m512 e = _mm512_load_ps(acc + c), o = _mm512_load_ps(acc + c + 16);
        for (int j = 0; j < 8; ++j) {
          const __m512i v = _mm512_loadu_si512(p[j] + 2 * c);
          e = _mm512_fmadd_ps(b[j], _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e);
          o = _mm512_fmadd_ps(b[j], _mm512_castsi512_ps(_mm512_and_si512(v, hi)), o);
        }
        _mm512_store_ps(acc + c, e);
        _mm512_store_ps(acc + c + 16, o);
      }
    }
    for (; i < count; ++i) {
      const unsigned char* p = base + idx[i] * rb + 2 * cb;
      const __m512 b = _mm512_set1_ps(a[i]);
      for (int64_t c = 0; c < nb; c += 32) {
        const __m512i v = _mm512_loadu_si512(p + 2 * c);
        _mm512_store_ps(acc + c, _mm512_fmadd_ps(b, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), _mm512_load_ps(acc + c)));
        _mm512_store_ps(acc + c + 16,
                        _mm512_fmadd_ps(b, _mm512_castsi512_ps(_mm512_and_si512(v, hi)), _mm512_load_ps(acc + c + 16)));
      }
    }
    // [16 even, 16 odd] per 32 rows back to row order.
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int64_t c = 0; c < nb; c += 32) {
      const __m512 e = _mm512_load_ps(acc + c), o = _mm512_load_ps(acc + c + 16);
      _mm512_storeu_ps(y + cb + c, _mm512_permutex2var_ps(e, lo_idx, o));
      _mm512_storeu_ps(y + cb + c + 16, _mm512_permutex2var_ps(e, hi_idx, o));
    }
  }
}

HIRE_AVX512 void k_accumulate_cols(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y,
                                   int64_t r0, int64_t r1) {
  if (w.dtype != kBF16) return avx2_kernels()->accumulate_cols(w, a, idx, count, y, r0, r1);
  acc_cols_bf16(w, a, idx, count, y, r0, r1);
}

// A full panel (16 rows) of a bf16 [rows][K] weight as f32 panel[k][16]: 16 rows x 16 k loaded,
// widened and transposed in registers (4 shuffle stages), against the AVX2 path's 8 x 8 blocks. The
// values are the same (bf16 -> f32 is exact); other dtypes, layouts and short panels use the AVX2 one.
HIRE_AVX512 void k_pack_panel(const Mat& w, int64_t r0, int64_t nr, float* panel) {
  if (w.dtype != kBF16 || w.transposed || nr != kPanel) return avx2_kernels()->pack_panel(w, r0, nr, panel);
  const int64_t K = w.cols;
  const uint16_t* rows = static_cast<const uint16_t*>(w.data) + r0 * K;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + i * K + k));
      r[i] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    __m512 t[16], u[16];
    for (int i = 0; i < 8; ++i) {  // pairs of rows, 32-bit interleave within each 128-bit lane
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; ++g) {  // u[4g + m]: column 4L + m of rows 4g..4g+3 in lane L
      u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    float* dst = panel + k * kPanel;
    for (int m = 0; m < 4; ++m) {  // gather each column's four 4-row pieces across lanes
      const __m512 x = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
      const __m512 y = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
      const __m512 z = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
      const __m512 v = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
      _mm512_store_ps(dst + m * kPanel, _mm512_shuffle_f32x4(x, z, 0x88));
      _mm512_store_ps(dst + (8 + m) * kPanel, _mm512_shuffle_f32x4(x, z, 0xDD));
      _mm512_store_ps(dst + (4 + m) * kPanel, _mm512_shuffle_f32x4(y, v, 0x88));
      _mm512_store_ps(dst + (12 + m) * kPanel, _mm512_shuffle_f32x4(y, v, 0xDD));
    }
  }
  for (; k < K; ++k)
    for (int i = 0; i < kPanel; ++i) panel[k * kPanel + i] = load_elem(kBF16, rows + i * K, k);
}

// Prefill's GEMM (ops.cc gemm): NT tokens x NP panels of 16 outputs, one zmm accumulator per token
// and panel; per k, NP panel loads and NT broadcasts (folded into the FMAs). Each lane sums
// x[t][k] * panel[k][j] over k in order from zero, then adds the bias, as the AVX2 micro-kernel
// does with its two ymm halves, so both paths give the same bits. k runs in blocks of kKBlock512,
// the partial sums parked in y between blocks (an exact f32 round trip), so that the panels' block
// stays in L2 while every token block reads it.
// On the Zen 5 VM (2 cores, 213 GFLOP/s of zmm FMA per core), at 128 tokens: 2 panels x 8 tokens
// (16 accumulators, 10 loads per 16 FMAs) 330-370 GFLOP/s; 1 panel x 8 tokens 300-320, x 12 tokens
// 260-300, x 16 tokens 210; the AVX2 kernel 185-200. K blocks of 2048 took W_down (K = 8192, two
// panels = 1 MiB, the size of L2) from 280-300 to 320-340 and changed nothing at K = 2048.
constexpr int kTokBlock512 = 8;
constexpr int64_t kKBlock512 = 2048;

template <int NP, int NT>
HIRE_AVX512 void micro512(const float* x, int64_t ldx, const float* panels, int64_t K, int64_t k0, int64_t k1,
                          const float* bias, float* y, int64_t ldy, int64_t nr) {
  __mmask16 m[NP];
  for (int p = 0; p < NP; ++p) {
    const int64_t n = std::clamp<int64_t>(nr - p * kPanel, 0, kPanel);
    m[p] = static_cast<__mmask16>((1u << n) - 1u);
  }
  __m512 acc[NP][NT];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t)
    for (int p = 0; p < NP; ++p)
      acc[p][t] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[p], y + t * ldy + p * kPanel);
  for (int64_t k = k0; k < k1; ++k) {
    __m512 w[NP];
    for (int p = 0; p < NP; ++p) w[p] = _mm512_load_ps(panels + p * K * kPanel + k * kPanel);
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      const __m512 xv = _mm512_set1_ps(x[t * ldx + k]);
      for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_fmadd_ps(xv, w[p], acc[p][t]);
    }
  }
  for (int p = 0; p < NP; ++p) {
    const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + p * kPanel) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      if (bias != nullptr) acc[p][t] = _mm512_add_ps(acc[p][t], b);
      _mm512_mask_storeu_ps(y + t * ldy + p * kPanel, m[p], acc[p][t]);
    }
  }
}

// The last nt < kTokBlock512 tokens: micro512<NP, nt>.
template <int NP, int NT>
HIRE_AVX512 void micro512_tail(int64_t nt, const float* x, int64_t ldx, const float* panels, int64_t K, int64_t k0,
                               int64_t k1, const float* bias, float* y, int64_t ldy, int64_t nr) {
  if constexpr (NT > 0) {
    if (nt == NT) return micro512<NP, NT>(x, ldx, panels, K, k0, k1, bias, y, ldy, nr);
    micro512_tail<NP, NT - 1>(nt, x, ldx, panels, K, k0, k1, bias, y, ldy, nr);
  }
}

template <int NP>
HIRE_AVX512 void gemm_np(const float* x, int64_t ldx, int64_t nt, const float* panels, int64_t K,
                         const float* bias, float* y, int64_t ldy, int64_t nr) {
  for (int64_t k0 = 0; k0 < K; k0 += kKBlock512) {
    const int64_t k1 = std::min(K, k0 + kKBlock512);
    const float* b = k1 == K ? bias : nullptr;  // the bias once, after the last block
    int64_t t = 0;
    for (; t + kTokBlock512 <= nt; t += kTokBlock512)
      micro512<NP, kTokBlock512>(x + t * ldx, ldx, panels, K, k0, k1, b, y + t * ldy, ldy, nr);
    micro512_tail<NP, kTokBlock512 - 1>(nt - t, x + t * ldx, ldx, panels, K, k0, k1, b, y + t * ldy, ldy, nr);
  }
}

HIRE_AVX512 void k_gemm_panels(const float* x, int64_t ldx, int64_t nt, const float* panels, int np, int64_t K,
                               const float* bias, float* y, int64_t ldy, int64_t nr) {
  if (np == 2) return gemm_np<2>(x, ldx, nt, panels, K, bias, y, ldy, nr);
  gemm_np<1>(x, ldx, nt, panels, K, bias, y, ldy, nr);
}

// ---- attention ----------------------------------------------------------------------------------

// exp(x) as exp256 in kernels_avx2.cc computes it (the same Cephes polynomial, about 2 ulp); 0 below
// -88.37, NaN propagates.
HIRE_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-88.3762626647949f), x);
  __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, z, x);
  y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

// Lanes < rem set (rem clamped to 0 .. 16).
HIRE_AVX512 inline __mmask16 lanes(int64_t rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xffff) : rem <= 0 ? 0 : static_cast<__mmask16>((1u << rem) - 1);
}

// [sum(v[0]), ..., sum(v[15])]: a transpose-and-add tree, about 3 instructions a sum (one
// horizontal sum each would be about 8).
HIRE_AVX512 inline __m512 hsum16(const __m512* v) {
  __m512 t[8], w[4];
  for (int u = 0; u < 8; ++u)  // per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3]
    t[u] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * u], v[2 * u + 1]), _mm512_unpackhi_ps(v[2 * u], v[2 * u + 1]));
  for (int u = 0; u < 4; ++u) {  // per block: the block sums of four vectors
    const __m512d a = _mm512_castps_pd(t[2 * u]), b = _mm512_castps_pd(t[2 * u + 1]);
    w[u] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 x0 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xdd));
  const __m512 x1 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x88), _mm512_shuffle_f32x4(w[2], w[3], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, 0x88), _mm512_shuffle_f32x4(x0, x1, 0xdd));
}

// 16 values of a key or value row from value 16 * i on: floats, or halves (an f16 cache) widened.
template <bool F16>
HIRE_AVX512 inline __m512 ld_kv(const unsigned char* row, int i) {
  if constexpr (F16) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row) + i));
  return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + 16 * i);
}

// H heads of a group over one block of 16 positions (n of them live), head_dim 16 * C, H * C <= 16 so
// that the H heads' accumulators stay in registers: scores (each key chunk loaded once for the H
// heads; 16 dot products at a time summed by hsum16), then per head the running max raised if the
// block beats it (its sum and acc rescaled), then the exponentials times the values (each value chunk
// loaded once for the H heads). out: the first head's [m, l, acc], heads d + 2 floats apart.
template <int H, int C, bool F16>
HIRE_AVX512 inline void attn_heads_block(const float* q, const unsigned char* const* k, const unsigned char* const* v,
                                         int64_t n, float* out, __m512 vscale, float softcap) {
  constexpr int64_t d = 16 * C;
  constexpr int KB = 16 / H;  // keys per round: H heads x KB keys fill hsum16's 16 sums
  alignas(64) float sc[H][16];
  for (int r = 0; r < H; ++r) {
    __m512 dot[16];
#pragma GCC unroll 16
    for (int a = 0; a < 16; ++a) dot[a] = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) {
      if constexpr (H == 1) {
        const __m512 qv = _mm512_loadu_ps(q + 16 * i);
#pragma GCC unroll 16
        for (int u = 0; u < 16; ++u) dot[u] = _mm512_fmadd_ps(qv, ld_kv<F16>(k[u], i), dot[u]);
      } else {
        __m512 kc[KB];
#pragma GCC unroll 16
        for (int u = 0; u < KB; ++u) kc[u] = ld_kv<F16>(k[r * KB + u], i);
#pragma GCC unroll 4
        for (int h = 0; h < H; ++h) {
          const __m512 qv = _mm512_loadu_ps(q + h * d + 16 * i);
#pragma GCC unroll 16
          for (int u = 0; u < KB; ++u) dot[h * KB + u] = _mm512_fmadd_ps(qv, kc[u], dot[h * KB + u]);
        }
      }
    }
    alignas(64) float t[16];
    _mm512_store_ps(t, _mm512_mul_ps(hsum16(dot), vscale));
    for (int h = 0; h < H; ++h)
      for (int u = 0; u < KB; ++u) sc[h][r * KB + u] = t[h * KB + u];
  }
  const __mmask16 live = lanes(n);
  __m512 rescale[H];
  for (int h = 0; h < H; ++h) {
    float* o = out + h * (d + 2);
    if (softcap > 0.0f)
      for (int u = 0; u < 16; ++u) sc[h][u] = softcap * std::tanh(sc[h][u] / softcap);
    const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), live, _mm512_load_ps(sc[h]));
    const float m_old = o[0], m = std::max(m_old, _mm512_reduce_max_ps(s));
    const float c = m == m_old ? 1.0f : std::exp(m_old - m);  // 0 on the first block (m_old = -inf)
    const __m512 e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(s, _mm512_set1_ps(m))));
    _mm512_store_ps(sc[h], e);
    o[0] = m;
    o[1] = o[1] * c + _mm512_reduce_add_ps(e);
    rescale[h] = _mm512_set1_ps(c);
  }
  __m512 acc[H][C];
#pragma GCC unroll 4
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) acc[h][i] = _mm512_mul_ps(_mm512_loadu_ps(out + h * (d + 2) + 2 + 16 * i), rescale[h]);
  for (int64_t u = 0; u < n; ++u) {
    __m512 p[H];
#pragma GCC unroll 4
    for (int h = 0; h < H; ++h) p[h] = _mm512_set1_ps(sc[h][u]);
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) {
      const __m512 vc = ld_kv<F16>(v[u], i);
#pragma GCC unroll 4
      for (int h = 0; h < H; ++h) acc[h][i] = _mm512_fmadd_ps(p[h], vc, acc[h][i]);
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < H; ++h)
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) _mm512_storeu_ps(out + h * (d + 2) + 2 + 16 * i, acc[h][i]);
}

// One pass over the range (flash-decoding style), 16 positions at a time: each block's keys and
// values are read from memory once for the whole group, its heads taken 4, 2 or 1 at a time (as
// many as keep their accumulators in registers), and nothing goes through a scores buffer.
template <int C, bool F16>
HIRE_AVX512 void attn_part_c(float* part, const float* q, const KvRows& kv, int64_t len, int64_t group, float scale,
                             float softcap) {
  constexpr int64_t d = 16 * C;
  constexpr int kMaxH = 16 / C >= 4 ? 4 : 16 / C >= 2 ? 2 : 1;
  for (int64_t g = 0; g < group; ++g) {
    float* o = part + g * (d + 2);
    o[0] = -INFINITY;
    o[1] = 0.0f;
    for (int64_t i = 0; i < d; ++i) o[2 + i] = 0.0f;
  }
  const __m512 vscale = _mm512_set1_ps(scale);
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
    for (; kMaxH >= 4 && g + 4 <= group; g += 4)
      attn_heads_block<kMaxH >= 4 ? 4 : 1, C, F16>(q + g * d, k, v, n, part + g * (d + 2), vscale, softcap);
    for (; kMaxH >= 2 && g + 2 <= group; g += 2)
      attn_heads_block<kMaxH >= 2 ? 2 : 1, C, F16>(q + g * d, k, v, n, part + g * (d + 2), vscale, softcap);
    for (; g < group; ++g) attn_heads_block<1, C, F16>(q + g * d, k, v, n, part + g * (d + 2), vscale, softcap);
  }
}

template <bool F16>
HIRE_AVX512 bool attn_part_d(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group,
                             float scale, float softcap) {
  switch (d) {
    case 16: attn_part_c<1, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 32: attn_part_c<2, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 48: attn_part_c<3, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 64: attn_part_c<4, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 80: attn_part_c<5, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 96: attn_part_c<6, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 112: attn_part_c<7, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 128: attn_part_c<8, F16>(part, q, kv, len, group, scale, softcap); return true;
    case 256: attn_part_c<16, F16>(part, q, kv, len, group, scale, softcap); return true;
    default: return false;
  }
}

// Head dims of 16 * C for C = 1 .. 8 and 16, f32 or f16 caches; any other goes to the AVX2 kernel.
HIRE_AVX512 void k_attn_part(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group,
                             float scale, float softcap, float* scores) {
  const bool done = kv.f16 ? attn_part_d<true>(part, q, kv, len, d, group, scale, softcap)
                           : attn_part_d<false>(part, q, kv, len, d, group, scale, softcap);
  if (!done) avx2_kernels()->attn_part(part, q, kv, len, d, group, scale, softcap, scores);
}

// The bandwidth probe's read: every cache line of the count floats (p 64-byte aligned) loaded once
// and its bits added as integers, one dependent add per line, with page heads prefetched kAheadBytes
// on, as the kernels do: the probe must not be slower than the kernels it is the roofline for. (On
// the Xeon VM, per-line prefetching read 35.6 GB/s against 31.2 without prefetch, and float adds were
// slower.) Returns the sum as a float (a value that depends on every line, nothing more).
HIRE_AVX512 float k_read_sum(const float* p, size_t count) {
  __m512i a = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    prefetch_stream_ahead(p + i, p + count);
    a = _mm512_add_epi32(a, _mm512_load_si512(p + i));
  }
  float s = static_cast<float>(_mm512_reduce_add_epi32(a));
  for (; i < count; ++i) s += p[i];
  return s;
}

}  // namespace

const KernelTable* avx512_kernels() {
  static const KernelTable table = [] {
    KernelTable t = *avx2_kernels();
    t.name = "avx512";
    t.gemv = k_gemv;
    t.pack_panel = k_pack_panel;
    t.gemm_panels = k_gemm_panels;
    t.gemm_pass_panels = 2;
    t.gemv_rows = k_gemv_rows;
    t.accumulate_cols = k_accumulate_cols;
    t.read_sum = k_read_sum;
    t.attn_part = k_attn_part;
    t.quant_gemv = avx512_quant_gemv;
    t.quant_gemv_rows = avx512_quant_gemv_rows;
    return t;
  }();
  return &table;
}

}  // namespace hire

#else  // not x86-64 (or HIRE_PORTABLE_ONLY)

namespace hire {
const KernelTable* avx512_kernels() { return nullptr; }
}  // namespace hire

#endif
