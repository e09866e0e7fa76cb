// AVX-512 VNNI quant_gemv (for the avx512 table, kernels_avx512.cc): the AVX2 path's integer dot
// products with one vpdpbusd (u8 x s8, four products summed into an int32 lane) in place of
// maddubs + madd + add, on 64-byte vectors. The predictor GEMV is compute-bound on AVX2 (about
// 30 GB/s per core, below what two cores can stream), so it gets a wider path.
//   int4 (group a multiple of 128): one 64-byte load holds 128 values; its low nibbles are values
//         0..31 and 64..95 of the block, its high nibbles 32..63 and 96..127 (see quant.h). Each
//         task first lays x out in that order (xl, xh per block), so one vpdpbusd meets each half.
//         The codes are q + 8; their offset, -8 * sum(xq) per group, is added once per row.
//   int4 (group 32 or 64): q4_small, a line's four (two) groups scaled lane half by lane half; with
//         mins (kQ4M), plus their term (quant.h). Other groups with mins go to the AVX2 kernel.
//   int8 (group 32 or a multiple of 64): vpdpbusd needs one unsigned side, so x is offset to xq + 128
//         (1..255) and 128 * sum(w), from a second vpdpbusd against ones, is taken off in int32.
// Other groups fall back to the AVX2 kernel. Results equal the AVX2 path's up to f32 rounding.
#include <cstring>

#include "quant_kernels.h"
#include "scratch.h"

#if HIRE_X86_64

#include <immintrin.h>

// GCC 12's AVX-512 headers build their "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports at every inlined use; the values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif


#define HIRE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

namespace hire {
namespace {

thread_local Scratch t_x;     // x laid out for the kernel
thread_local Scratch t_xs;    // int4 groups 32/64: x's codes, zero-padded to whole lines
thread_local Scratch t_off;   // int4: per group, the codes' offset against x (f32)
thread_local Scratch t_d;     // per row: f32 group scales

HIRE_AVX512 inline __m512i ld(const void* p) { return _mm512_loadu_si512(p); }

// d[g] = f32(scale_w[g]) * scale_x[g] for g < groups (scale_pad, a multiple of 16, entries: past the
// row's groups sw reads the next row or the slack, and sx is zero there).
HIRE_AVX512 inline void group_scales(const uint16_t* sw, const float* sx, int64_t pad, float* d) {
  for (int64_t g = 0; g < pad; g += 16) {
    const __m512 w = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sw + g)));
    _mm512_store_ps(d + g, _mm512_mul_ps(w, _mm512_load_ps(sx + g)));
  }
}

// Lanes 0 .. left - 1 of 16 (none for left <= 0, all for left >= 16): a row's groups from g on.
inline __mmask16 lanes_below(int64_t left) {
  return left >= 16 ? 0xffff : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
}

// group_scales over a row's `groups` groups, d zero from there to pad, in vector stores only: the
// f16s past the row's groups are other bytes (maybe NaN), and zeroing them one float at a time after
// the vector stores made the next vector loads of d wait on store forwarding, every row. q4_small at
// 896 columns (28 groups of 32, Qwen2.5-0.5B's width) on the Zen 5 VM, the two builds alternated in
// one process: 151936 x 896 35 -> 42 GB/s and 4864 x 896 33 -> 39 (a slow phase: 30 -> 33, 28 -> 32);
// widths of whole 16 groups unchanged.
HIRE_AVX512 inline void group_scales_masked(const uint16_t* sw, const float* sx, int64_t groups, int64_t pad,
                                            float* d) {
  for (int64_t g = 0; g < pad; g += 16) {
    const __mmask16 k = lanes_below(groups - g);
    const __m512 w = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, sw + g));
    _mm512_store_ps(d + g, _mm512_maskz_mul_ps(k, w, _mm512_load_ps(sx + g)));
  }
}

// The page heads of row r + ahead (>= 8 KiB ahead, as the AVX2 kernel does): a task's rows are one stream.
inline void prefetch_row(const QuantMatrix& q, int64_t r, int64_t ahead, int64_t r1) {
  if (r + ahead >= r1) return;
  prefetch_page_heads(q.codes(r + ahead), q.row_stride);
}

// x in the int4 codes' nibble order, `blocks` 128-value blocks of src into dst (both 32-byte
// aligned): per block, the values the low nibbles meet, [0, 32) ++ [64, 96), then the high ones',
// [32, 64) ++ [96, 128) (quant.h), so one vpdpbusd meets each half of a 64-byte line of codes.
HIRE_AVX512 inline void nibble_order(const int8_t* src, int64_t blocks, int8_t* dst) {
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i* s = reinterpret_cast<const __m256i*>(src + 128 * b);
    __m256i* o = reinterpret_cast<__m256i*>(dst + 128 * b);
    _mm256_store_si256(o, _mm256_loadu_si256(s));
    _mm256_store_si256(o + 1, _mm256_loadu_si256(s + 2));
    _mm256_store_si256(o + 2, _mm256_loadu_si256(s + 1));
    _mm256_store_si256(o + 3, _mm256_loadu_si256(s + 3));
  }
}

// One group of int4 codes (bpg 128-value blocks) against x in nibble order: the int32 lane sums of
// codes * x, exact (the codes' offset of 8 is taken off per row, see q4_rows). The task's stream is
// prefetched up to pf_end (prefetch_stream_ahead).
HIRE_AVX512 inline __m512i q4_group(const unsigned char* codes, const int8_t* xp, int64_t bpg,
                                    const unsigned char* pf_end) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512i s = _mm512_setzero_si512();
  for (int64_t b = 0; b < bpg; ++b) {
    const unsigned char* line = codes + 64 * b;
    prefetch_stream_ahead(line, pf_end);
    if (line + kQuantLineAhead < pf_end) prefetch_l1(line + kQuantLineAhead);
    const __m512i w = ld(line);
    s = _mm512_dpbusd_epi32(s, _mm512_and_si512(w, low), _mm512_load_si512(xp + 128 * b));
    s = _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(w, 4), low), _mm512_load_si512(xp + 128 * b + 64));
  }
  return s;
}

// BPG = blocks per group (0: run-time bpg).
// Per row: y = sum_g d[g] * (sum of codes * x over g) + sum_g d[g] * off[g], where off[g] = -8 * sum(xq
// over g) is the codes' offset, once per group instead of once per lane (both sums are exact integers
// below 2^24, so each converts to f32 exactly). The task's rows are one linear stream whose page
// heads are prefetched kAheadBytes on (see kernel_table.h). (On the Xeon VM, per-line prefetching read
// 32.5-33 GB/s against 27.5-28 for two-line bursts per pair of groups and 25 with no prefetch.)
template <int BPG>
HIRE_AVX512 void q4_rows(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  const int64_t blocks = q.padded / 128, bpg = BPG > 0 ? BPG : q.group / 128;
  int8_t* xp = t_x.get<int8_t>(static_cast<size_t>(q.padded));
  nibble_order(x.q, blocks, xp);
  float* off = t_off.get<float>(static_cast<size_t>(q.scale_pad));
  const __m512i eights = _mm512_set1_epi8(8);
  for (int64_t g = 0; g < q.groups; ++g) {
    __m512i c = _mm512_setzero_si512();
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      c = _mm512_dpbusd_epi32(c, eights, ld(xp + 128 * b));
      c = _mm512_dpbusd_epi32(c, eights, ld(xp + 128 * b + 64));
    }
    off[g] = -static_cast<float>(_mm512_reduce_add_epi32(c));
  }
  float* d = t_d.get<float>(static_cast<size_t>(q.scale_pad));
  const int64_t gbytes = 64 * bpg, gx = 128 * bpg;
  const unsigned char* end = q.codes(r1);  // the task's rows are one stream
  for (int64_t r = r0; r < r1; ++r) {
    group_scales(q.scales(r), x.scale, q.scale_pad, d);
    const unsigned char* codes = q.codes(r);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < q.groups; g += 16) {  // d past the groups may be NaN (see group_scales)
      const __mmask16 m = lanes_below(q.groups - g);
      a0 = _mm512_fmadd_ps(_mm512_maskz_load_ps(m, d + g), _mm512_maskz_load_ps(m, off + g), a0);
    }
    int64_t g = 0;
    for (; g + 2 <= q.groups; g += 2) {
      a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_group(codes + gbytes * g, xp + gx * g, bpg, end)),
                           _mm512_set1_ps(d[g]), a0);
      a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_group(codes + gbytes * (g + 1), xp + gx * (g + 1), bpg, end)),
                           _mm512_set1_ps(d[g + 1]), a1);
    }
    if (g < q.groups) a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_group(codes + gbytes * g, xp + gx * g, bpg, end)),
                                           _mm512_set1_ps(d[g]), a0);
    // The scales' line(s) past the codes: their prefetch keeps the stream whole.
    for (const unsigned char* t = codes + q.row_bytes; t < codes + q.row_stride; t += 64) {
      prefetch_stream_ahead(t, end);
      if (t + kQuantLineAhead < end) prefetch_l1(t + kQuantLineAhead);
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
}

// One group of int8 codes (vpg 64-value vectors) against xq + 128: an exact int32 lane sum. Each line
// kQuantLineAhead on is prefetched while it lies before end (the task's last row); alternated inside
// one process on the Zen 5 VM: 69-73 GB/s against 56-59 with the row's page heads alone.
HIRE_AVX512 inline __m512i q8_group(const int8_t* w, const uint8_t* xu, int64_t vpg, const int8_t* end) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s = _mm512_setzero_si512(), sw = s;
  for (int64_t v = 0; v < vpg; ++v) {
    if (w + 64 * v + kQuantLineAhead < end) prefetch_l1(w + 64 * v + kQuantLineAhead);
    const __m512i wv = ld(w + 64 * v);
    s = _mm512_dpbusd_epi32(s, _mm512_load_si512(xu + 64 * v), wv);
    sw = _mm512_dpbusd_epi32(sw, ones, wv);
  }
  return _mm512_sub_epi32(s, _mm512_slli_epi32(sw, 7));
}

// VPG = 64-value vectors per group (0: run-time vpg).
template <int VPG>
HIRE_AVX512 void q8_rows(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  const int64_t vectors = q.padded / 64, vpg = VPG > 0 ? VPG : q.group / 64;
  // xq + 128 as unsigned bytes (xq is -127..127, so 1..255): x ^ 0x80 bit for bit.
  uint8_t* xu = t_x.get<uint8_t>(static_cast<size_t>(q.padded));
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t v = 0; v < vectors; ++v) _mm512_store_si512(xu + 64 * v, _mm512_xor_si512(ld(x.q + 64 * v), flip));
  float* d = t_d.get<float>(static_cast<size_t>(q.scale_pad));
  const int64_t ahead = (8192 + q.row_stride - 1) / q.row_stride;
  const int64_t gb = 64 * vpg;
  const int8_t* end = reinterpret_cast<const int8_t*>(q.codes(r1));  // the task's rows are one stream
  for (int64_t r = r0; r < r1; ++r) {
    prefetch_row(q, r, ahead, r1);
    group_scales(q.scales(r), x.scale, q.scale_pad, d);
    const int8_t* w = reinterpret_cast<const int8_t*>(q.codes(r));
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t g = 0;
    for (; g + 2 <= q.groups; g += 2) {
      a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q8_group(w + gb * g, xu + gb * g, vpg, end)), _mm512_set1_ps(d[g]), a0);
      a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q8_group(w + gb * (g + 1), xu + gb * (g + 1), vpg, end)),
                           _mm512_set1_ps(d[g + 1]), a1);
    }
    if (g < q.groups)
      a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q8_group(w + gb * g, xu + gb * g, vpg, end)), _mm512_set1_ps(d[g]), a0);
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
}

constexpr int64_t kGatherAhead = 4;

// Before row i of n: a list of selected rows prefetches the row kGatherAhead on whole, to L2 (short
// rows, 2 KiB at 2048 columns, leave a page-head prefetch too little time: on the Zen 5 VM HiRE's
// exact int8 rows took 6.5 ms a token with the next row's page heads, 6.0 this way; what bounds them
// is the rows' count, not bytes); a run of rows, the page heads of the row `ahead` on.
template <bool Gathered, class RowOf>
inline void prefetch_ahead(const QuantMatrix& q, int64_t i, int64_t n, int64_t ahead, RowOf row_of) {
  if (Gathered) {
    if (i + kGatherAhead < n) prefetch_span(q.codes(row_of(i + kGatherAhead)), q.row_stride);
  } else if (i + ahead < n) {
    prefetch_page_heads(q.codes(row_of(i) + ahead), q.row_stride);
  }
}

// Group 32 (Q8_0's): each 64-byte line holds two groups, so one vpdpbusd pair sums both (lanes 0-7
// and 8-15) and each half is scaled by its own group's d, spread over its lanes by one permute. An odd
// last group is a half line, loaded masked. (The AVX2 kernel, which this replaced here, decoded the
// 1B shape with int8 weights at 29 tokens/s against 39 for this layout at group 128.)
// The rows row_of(0 .. n - 1) of q into y[0 .. n): a task's run of rows (one stream, prefetched
// kQuantLineAhead on and by page heads a few rows on) or a list of selected rows (HiRE's candidates,
// each row a few rows on prefetched whole).
template <bool Gathered, class RowOf>
HIRE_AVX512 void q8_g32(const QuantMatrix& q, const QuantVector& x, float* y, int64_t n, RowOf row_of) {
  const int64_t full = q.groups / 2, lines = (q.groups + 1) / 2;
  // xq + 128 as unsigned bytes; x.q has room for padded + 64 bytes, so whole lines can be read (an odd
  // last group's second half meets masked-off codes).
  uint8_t* xu = t_x.get<uint8_t>(static_cast<size_t>(64 * lines));
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t v = 0; v < lines; ++v) _mm512_store_si512(xu + 64 * v, _mm512_xor_si512(ld(x.q + 64 * v), flip));
  float* d = t_d.get<float>(static_cast<size_t>(q.scale_pad));
  const int64_t ahead = (8192 + q.row_stride - 1) / q.row_stride;
  const int8_t* end = reinterpret_cast<const int8_t*>(q.codes(row_of(n - 1) + 1));  // the stream's end
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  // The line's two group sums, exact int32, as floats.
  auto line_sums = [&](__m512i wv, int64_t v) HIRE_AVX512 {
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_load_si512(xu + 64 * v), wv);
    const __m512i sw = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, wv);
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(s, _mm512_slli_epi32(sw, 7)));
  };
  // Groups 2v and 2v + 1 of d over lanes 0-7 and 8-15 (16 groups per load of d).
  auto line_scales = [&](int64_t v) HIRE_AVX512 {
    const __m512i idx = _mm512_add_epi32(halves, _mm512_set1_epi32(static_cast<int>(2 * (v & 7))));
    return _mm512_permutexvar_ps(idx, _mm512_load_ps(d + 16 * (v >> 3)));
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = row_of(i);
    prefetch_ahead<Gathered>(q, i, n, ahead, row_of);
    group_scales(q.scales(r), x.scale, q.scale_pad, d);
    const int8_t* w = reinterpret_cast<const int8_t*>(q.codes(r));
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int64_t v = 0;
    for (; v + 2 <= full; v += 2) {
      const int8_t* line = w + 64 * v;
      if (!Gathered && line + kQuantLineAhead < end) prefetch_l1(line + kQuantLineAhead);
      if (!Gathered && line + 64 + kQuantLineAhead < end) prefetch_l1(line + 64 + kQuantLineAhead);
      a0 = _mm512_fmadd_ps(line_sums(ld(line), v), line_scales(v), a0);
      a1 = _mm512_fmadd_ps(line_sums(ld(line + 64), v + 1), line_scales(v + 1), a1);
    }
    if (v < full) a0 = _mm512_fmadd_ps(line_sums(ld(w + 64 * v), v), line_scales(v), a0), ++v;
    if (v < lines) {  // the odd last group: lanes 8-15 (past the row's codes) count nothing
      const __m512i wv = _mm512_maskz_loadu_epi8(0xffffffffull, w + 64 * v);
      a1 = _mm512_fmadd_ps(line_sums(wv, v), _mm512_maskz_mov_ps(0x00ff, line_scales(v)), a1);
    }
    // The scales' line(s) past the codes: their prefetch keeps the stream whole.
    if (!Gathered)
      for (const int8_t* t = w + q.row_bytes; t < w + q.row_stride; t += 64)
        if (t + kQuantLineAhead < end) prefetch_l1(t + kQuantLineAhead);
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
}

HIRE_AVX512 void q8_rows_g32(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  if (r1 > r0) q8_g32<false>(q, x, y + r0, r1 - r0, [r0](int64_t i) { return r0 + i; });
}

// Int4 in groups of 32 (llama.cpp's Q4_0) or 64: a 64-byte line holds 128 values (two 64-value blocks,
// see quant.h), four groups of 32 or two of 64. With x in nibble order (as q4_rows lays it out) the
// low nibbles' vpdpbusd sums values 0-31 in lanes 0-7 and 64-95 in lanes 8-15, the high nibbles'
// 32-63 and 96-127: each lane half is one group (or half of one at 64), scaled by its group's d,
// spread over its lanes by one permute, so no horizontal sum is taken per group. Rows as in q8_g32:
// a task's run (one stream) or HiRE's selected rows (each a few rows on prefetched whole). On the
// Zen 5 VM (24 matrices of 8192 x 2048, paths alternated in one process) group 32 read 64-67 GB/s
// against the AVX2 kernel's 45-47 and group 128's 63-65; with the permute indices computed line by
// line instead of fixed per run, 43-45.
template <int G, bool Gathered, class RowOf>
HIRE_AVX512 void q4_small(const QuantMatrix& q, const QuantVector& x, float* y, int64_t n, RowOf row_of) {
  static_assert(G == 32 || G == 64, "q4_small: groups of 32 or 64");
  const int64_t lines = (q.row_bytes + 63) / 64;  // a row of an odd number of blocks ends in a half line
  const bool half_last = q.row_bytes % 64 != 0;
  // x zero-padded to whole lines (x.q need not hold a whole last line), in nibble order.
  int8_t* xp = t_x.get<int8_t>(static_cast<size_t>(128 * lines));
  int8_t* xs = t_xs.get<int8_t>(static_cast<size_t>(128 * lines));
  std::memset(xs + q.padded, 0, static_cast<size_t>(128 * lines - q.padded));
  std::memcpy(xs, x.q, static_cast<size_t>(q.padded));
  nibble_order(xs, lines, xp);
  // The codes' offset of 8 against x, per group (zeros past the groups).
  float* off = t_off.get<float>(static_cast<size_t>(q.scale_pad));
  for (int64_t g = 0; g < q.scale_pad; ++g) {
    int32_t sum = 0;
    if (g < q.groups)
      for (int64_t j = g * G; j < (g + 1) * G; ++j) sum += xs[j];
    off[g] = -8.0f * static_cast<float>(sum);
  }
  float* d = t_d.get<float>(static_cast<size_t>(q.scale_pad));
  const int64_t ahead = (8192 + q.row_stride - 1) / q.row_stride;
  const unsigned char* end = q.codes(row_of(n - 1) + 1);  // the stream's end
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  // A run of kRun lines holds 16 groups (one load of d). Line j of a run: the permute indices that
  // spread its low (idx_lo) and high (idx_hi) nibble sums' groups over their lane halves.
  constexpr int kRun = 16 * G / 128;
  __m512i idx_lo[kRun], idx_hi[kRun];
  for (int j = 0; j < kRun; ++j) {
    idx_lo[j] = G == 32 ? _mm512_add_epi32(_mm512_slli_epi32(halves, 1), _mm512_set1_epi32(4 * j))
                        : _mm512_add_epi32(halves, _mm512_set1_epi32(2 * j));
    idx_hi[j] = G == 32 ? _mm512_add_epi32(idx_lo[j], _mm512_set1_epi32(1)) : idx_lo[j];
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = row_of(i);
    prefetch_ahead<Gathered>(q, i, n, ahead, row_of);
    group_scales_masked(q.scales(r), x.scale, q.groups, q.scale_pad, d);
    const unsigned char* w = q.codes(r);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t g = 0; g < q.scale_pad; g += 16)
      a0 = _mm512_fmadd_ps(_mm512_load_ps(d + g), _mm512_load_ps(off + g), a0);
    if (q.mins) {  // sum_g (min_g + 8 scale_g) * xsum_g (quant.h); masked past the row's groups
      const uint16_t* sc = q.scales(r);
      const uint16_t* mn = q.min_values(r);
      for (int64_t g = 0; g < q.groups; g += 16) {
        const __mmask16 k = lanes_below(q.groups - g);
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, sc + g));
        const __m512 m = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, mn + g));
        a1 = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), s, m), _mm512_maskz_loadu_ps(k, x.xsum + g), a1);
      }
    }
    // Line v's low- and high-nibble sums, each lane half scaled by its group's d (dl, dh).
    auto line = [&](int64_t v, __m512i wv, __m512 dl, __m512 dh) HIRE_AVX512 {
      const __m512i sl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(wv, low), ld(xp + 128 * v));
      const __m512i sh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(wv, 4), low),
                                             ld(xp + 128 * v + 64));
      a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sl), dl, a0);
      a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sh), dh, a1);
    };
    // Whole runs unrolled (the permutes' indices fixed), then the rest line by line.
    const int64_t whole = half_last ? lines - 1 : lines;
    int64_t v = 0;
    for (; v + kRun <= whole; v += kRun) {
      const __m512 dv = _mm512_load_ps(d + 16 * (v / kRun));
      for (int64_t j = 0; j < kRun; ++j) {
        const unsigned char* p = w + 64 * (v + j);
        if (!Gathered && p + kQuantLineAhead < end) prefetch_l1(p + kQuantLineAhead);
        line(v + j, ld(p), _mm512_permutexvar_ps(idx_lo[j], dv), _mm512_permutexvar_ps(idx_hi[j], dv));
      }
    }
    for (; v < lines; ++v) {
      const unsigned char* p = w + 64 * v;
      if (!Gathered && p + kQuantLineAhead < end) prefetch_l1(p + kQuantLineAhead);
      const __m512i wv = v >= whole ? _mm512_maskz_loadu_epi8(0xffffffffull, p) : ld(p);
      const __m512 dv = _mm512_load_ps(d + 16 * (v / kRun));
      line(v, wv, _mm512_permutexvar_ps(idx_lo[v % kRun], dv), _mm512_permutexvar_ps(idx_hi[v % kRun], dv));
    }
    if (!Gathered)
      for (const unsigned char* t = w + q.row_bytes; t < w + q.row_stride; t += 64)
        if (t + kQuantLineAhead < end) prefetch_l1(t + kQuantLineAhead);
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
  }
}

}  // namespace

bool avx512_quant_gemv_rows(const QuantMatrix& q, const QuantVector& x, const int32_t* idx, int64_t i0, int64_t i1,
                            float* y) {
  if (i1 <= i0) return true;
  auto row_of = [idx, i0](int64_t i) { return static_cast<int64_t>(idx[i0 + i]); };
  if (q.bits == 8 && q.group == 32) {
    q8_g32<true>(q, x, y + i0, i1 - i0, row_of);
  } else if (q.bits == 4 && q.group == 32) {
    q4_small<32, true>(q, x, y + i0, i1 - i0, row_of);
  } else if (q.bits == 4 && q.group == 64) {
    q4_small<64, true>(q, x, y + i0, i1 - i0, row_of);
  } else {
    return false;
  }
  return true;
}

void avx512_quant_gemv(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1) {
  if (q.bits == 4 && q.group == 32) {
    if (r1 > r0) q4_small<32, false>(q, x, y + r0, r1 - r0, [r0](int64_t i) { return r0 + i; });
  } else if (q.bits == 4 && q.group == 64) {
    if (r1 > r0) q4_small<64, false>(q, x, y + r0, r1 - r0, [r0](int64_t i) { return r0 + i; });
  } else if (q.bits == 4 && q.group % 128 == 0 && !q.mins) {
    if (q.group == 128) {
      q4_rows<1>(q, x, y, r0, r1);
    } else {
      q4_rows<0>(q, x, y, r0, r1);
    }
  } else if (q.bits == 8 && q.group == 32) {
    q8_rows_g32(q, x, y, r0, r1);
  } else if (q.bits == 8 && q.group % 64 == 0) {
    if (q.group == 128) {
      q8_rows<2>(q, x, y, r0, r1);
    } else {
      q8_rows<0>(q, x, y, r0, r1);
    }
  } else {
    avx2_quant_gemv(q, x, y, r0, r1);
  }
}

}  // namespace hire

#endif
