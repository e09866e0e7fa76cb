// HiRE sparse ops (sparse.h) over the active KernelTable: work splitting on the thread pool, the int8
// quantization of x for quant_matvec, and the (path-independent, plain C++) weight quantization,
// dequantization and relayout. Small problems stay on the calling thread, as in ops.cc.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>  // baseline on x86-64
#endif

#include "kernel_table.h"
#include "scratch.h"
#include "sparse.h"
#include "threadpool.h"

namespace hire {
namespace {

constexpr int64_t kSerialWork = 1 << 15;  // multiply-adds below which a dispatch is not worth it

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t chunk_size(int64_t total, int64_t parts, int64_t align) {
  return std::max<int64_t>(align, ceil_div(ceil_div(total, parts), align) * align);
}

thread_local Scratch t_rows;     // gemv_rows: de-interleaved x
// x quantized for quant_gemv: its int8 codes, scales and int4 offset corrections (quantized_x).
struct QuantXScratch {
  Scratch q, scale, corr, xsum;
};
thread_local QuantXScratch t_pred_x;    // quant_matvec and the HiRE ops' predictor scores
thread_local QuantXScratch t_weight_x;  // quant_input: products with a kQ8 / kQ4 weight, inside their
                                        // tasks (their own, so the predictor's x stays whole)
thread_local Scratch t_qrow;     // quantize: f32 rows
thread_local Scratch t_qcodes;   // quantize: int8 codes of a row
thread_local Scratch t_acc_part; // accumulate_cols: the column chunks' partial outputs
thread_local Scratch t_iota;     // accumulate_cols with idx = nullptr: 0, 1, 2, ...
thread_local Scratch t_q8rows;   // relayout of a kQ8 / kQ4 weight: f32 rows

// Runs fn(i0, i1) over [0, n) in contiguous chunks (multiples of align), one per thread, or on the
// calling thread when the work is small.
template <class F>
void split(int64_t n, int64_t work, int64_t align, F&& fn) {
  if (n <= 0) return;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t parts = (work < kSerialWork) ? 1 : pool.threads();
  const int64_t chunk = chunk_size(n, parts, align);
  const int64_t tasks = ceil_div(n, chunk);
  if (tasks == 1) {
    fn(int64_t{0}, n);
    return;
  }
  pool.parallel_for(tasks, [&](int64_t t, int) { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
}

// accumulate_cols in column chunks: chunk t sums its columns over every output row into its own
// partial, so a thread reads whole columns (one contiguous read each, where splitting the rows
// across threads read half-columns), and y = the partials added in chunk order. The chunks depend on
// count alone, never on the thread count, so every thread count gives the same bits.
struct ColChunks {
  int64_t count, tasks;
  int64_t begin(int64_t t) const { return t * count / tasks; }
  // part[t * rows ..) = sum over chunk t's columns (the primitive overwrites its rows).
  void partial(const KernelTable& K, const Mat& w, const float* a, const int32_t* idx, float* part, int64_t t) const {
    const int64_t i0 = begin(t), n = begin(t + 1) - i0;
    K.accumulate_cols(w, a + i0, idx + i0, n, part + t * w.rows, 0, w.rows);
  }
  void sum(const KernelTable& K, int64_t rows, const float* part, float* y) const {
    std::memcpy(y, part, static_cast<size_t>(rows) * sizeof(float));
    for (int64_t t = 1; t < tasks; ++t) K.add(y, part + t * rows, rows);
  }
  // Every chunk on the calling thread, then the sum: the parallel op's bits.
  void serial(const KernelTable& K, const Mat& w, const float* a, const int32_t* idx, float* part, float* y) const {
    for (int64_t t = 0; t < tasks; ++t) partial(K, w, a, idx, part, t);
    sum(K, w.rows, part, y);
  }
};

// Up to 16 chunks of at least 32 columns: 16 keeps 2, 4 or 8 threads evenly loaded.
inline ColChunks col_chunks(int64_t count) {
  return ColChunks{count, std::clamp<int64_t>(count / 32, 1, 16)};
}

const int32_t* identity_indices(int64_t n) {
  int32_t* p = t_iota.get<int32_t>(static_cast<size_t>(n) + 1);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(i);
  return p;
}

// Round to nearest, ties to even, for |v| < 2^22 (default rounding mode), vectorisable.
inline float round_even(float v) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return (v + magic) - magic;
}

// Clamp to [-lim, lim]; NaN -> 0. Branch-free selects, so loops over it vectorise.
inline float clamp_code(float t, float lim) {
  t = t == t ? t : 0.0f;
  t = t < lim ? t : lim;
  return t > -lim ? t : -lim;
}

// One logical row (f32, cols values) into row r of q.
void quantize_row(const float* w, QuantMatrix& q, int64_t r, int8_t* codes) {
  const float qmax = q.bits == 8 ? 127.0f : 7.0f;
  const int64_t G = q.group;
  uint16_t* sc = const_cast<uint16_t*>(q.scales(r));
  for (int64_t g = 0; g < q.groups; ++g) {
    const int64_t lo = g * G;
    const int64_t n = std::min(G, q.cols - lo);
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const float a = std::fabs(w[lo + j]);
      amax = a > amax ? a : amax;  // NaN never wins
    }
    uint16_t s16 = float_to_half(amax / qmax);
    if (s16 == 0x7c00u) s16 = 0x7bffu;  // beyond f16: the largest finite scale
    // A subnormal half can round the scale down by up to half its ulp (2^-25), far more than the
    // 2^-11 relative of a normal one; then max|w| would clip past qmax. Take the next half up.
    if (amax / half_to_float(s16) > qmax + 0.5f && s16 < 0x7bffu) ++s16;
    sc[g] = s16;
    const float d = half_to_float(s16);
    for (int64_t j = 0; j < G; ++j) {
      const float v = j < n ? w[lo + j] : 0.0f;
      const float t = d > 0.0f ? v / d : 0.0f;
      codes[lo + j] = static_cast<int8_t>(round_even(clamp_code(t, qmax)));
    }
  }
  pack_codes(q, r, codes);
}

}  // namespace

void pack_codes(QuantMatrix& q, int64_t r, const int8_t* codes) {
  unsigned char* out = const_cast<unsigned char*>(q.codes(r));
  if (q.bits == 8) {
    std::memcpy(out, codes, static_cast<size_t>(q.padded));
  } else {
    for (int64_t c = 0; c < q.row_bytes / 32; ++c) {
      for (int64_t j = 0; j < 32; ++j) {
        const int64_t v0 = 64 * c + j, v1 = v0 + 32;
        const int lo = codes[v0] + 8;
        const int hi = (v1 < q.padded ? codes[v1] : 0) + 8;
        out[32 * c + j] = static_cast<unsigned char>(lo | (hi << 4));
      }
    }
  }
}

namespace {

// x to int8 per group: scale max|x_g| / 127, q = round_even(x * (127 / max|x_g|)), all in f32, so
// the SSE2 and the scalar loops give the same bits. Zero-pads q to groups * G and scale to `stride`;
// fills the int4 offset corrections (layout in quant.h) when corr is not null, and the groups' scaled
// sums for minimums when xsum is not null. Once per quant_matvec call, on the calling thread: ~0.3 us
// for 2048 values with SSE2 (baseline on x86-64).
void quantize_x(const float* x, int64_t cols, int64_t G, int64_t groups, int64_t stride, int8_t* xq, float* xs,
                int32_t* corr, float* xsum) {
  for (int64_t g = 0; g < stride; ++g) {
    if (g >= groups) {
      xs[g] = 0.0f;
      if (xsum != nullptr) xsum[g] = 0.0f;
      continue;
    }
    const int64_t lo = g * G, n = std::min(G, cols - lo);
    const float* xg = x + lo;
    int8_t* qg = xq + lo;
    int64_t j = 0;
    float amax = 0.0f;
#if defined(__SSE2__)
    const __m128 sign = _mm_set1_ps(-0.0f);
    __m128 m4 = _mm_setzero_ps();
    for (; j + 4 <= n; j += 4) m4 = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(xg + j)), m4);  // NaN -> m4
    float m[4];
    _mm_storeu_ps(m, m4);
    for (int l = 0; l < 4; ++l) amax = m[l] > amax ? m[l] : amax;
#endif
    for (; j < n; ++j) {
      const float a = std::fabs(xg[j]);
      amax = a > amax ? a : amax;  // NaN never wins
    }
    xs[g] = amax / 127.0f;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    j = 0;
#if defined(__SSE2__)
    const __m128 vinv = _mm_set1_ps(inv), lim = _mm_set1_ps(127.0f), nlim = _mm_set1_ps(-127.0f);
    for (; j + 16 <= n; j += 16) {
      __m128i r[4];
      for (int l = 0; l < 4; ++l) {
        __m128 v = _mm_mul_ps(_mm_loadu_ps(xg + j + 4 * l), vinv);
        v = _mm_and_ps(v, _mm_cmpord_ps(v, v));          // NaN -> 0
        v = _mm_min_ps(_mm_max_ps(v, nlim), lim);        // clamp
        r[l] = _mm_cvtps_epi32(v);                       // round to nearest even (default MXCSR)
      }
      const __m128i p = _mm_packs_epi16(_mm_packs_epi32(r[0], r[1]), _mm_packs_epi32(r[2], r[3]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qg + j), p);
    }
#endif
    for (; j < n; ++j) qg[j] = static_cast<int8_t>(round_even(clamp_code(xg[j] * inv, 127.0f)));
    for (; j < G; ++j) qg[j] = 0;
    if (xsum != nullptr) {
      int32_t sum = 0;
      for (int64_t i = 0; i < G; ++i) sum += qg[i];
      xsum[g] = xs[g] * static_cast<float>(sum);
    }
    if (corr == nullptr) continue;
    // Per byte position of the 32-value vectors, the sum over the group's vectors (int16 is enough:
    // at most 128 vectors of |q| <= 127).
    int16_t acc[32];
#if defined(__SSE2__)
    __m128i a[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    for (int64_t v = 0; v < G; v += 32) {
      for (int h = 0; h < 2; ++h) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qg + v + 16 * h));
        a[2 * h] = _mm_add_epi16(a[2 * h], _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8));  // sign-extend
        a[2 * h + 1] = _mm_add_epi16(a[2 * h + 1], _mm_srai_epi16(_mm_unpackhi_epi8(b, b), 8));
      }
    }
    for (int h = 0; h < 4; ++h) _mm_storeu_si128(reinterpret_cast<__m128i*>(acc + 8 * h), a[h]);
#else
    for (int i = 0; i < 32; ++i) acc[i] = 0;
    for (int64_t v = 0; v < G; v += 32)
      for (int i = 0; i < 32; ++i) acc[i] = static_cast<int16_t>(acc[i] + qg[v + i]);
#endif
    if (G == 32) {
      int32_t s0 = 0, s1 = 0;
      for (int i = 0; i < 16; ++i) {
        s0 += acc[i];
        s1 += acc[16 + i];
      }
      corr[8 * (g / 4) + g % 4] = 8 * s0;
      corr[8 * (g / 4) + 4 + g % 4] = 8 * s1;
    } else {
      for (int l = 0; l < 8; ++l) corr[8 * g + l] = 8 * (acc[4 * l] + acc[4 * l + 1] + acc[4 * l + 2] + acc[4 * l + 3]);
    }
  }
}

template <class T>
void transpose_copy(const unsigned char* src, int64_t a, int64_t b, unsigned char* dst) {
  // src memory [a][b] -> dst memory [b][a] in 16 x 16 tiles, writing dst rows contiguously (the
  // fastest order measured: ~13 ms for 2048 x 8192 bf16 on one core); a strip of 16 src rows per task.
  constexpr int64_t kTile = 16;
  const int64_t strips = ceil_div(a, kTile);
  auto task = [&](int64_t t, int) {
    const int64_t i0 = t * kTile, i1 = std::min(a, i0 + kTile);
    for (int64_t j0 = 0; j0 < b; j0 += kTile) {
      const int64_t j1 = std::min(b, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j) {
        unsigned char* d = dst + j * a * static_cast<int64_t>(sizeof(T));
        for (int64_t i = i0; i < i1; ++i) {
          T v;
          std::memcpy(&v, src + (i * b + j) * static_cast<int64_t>(sizeof(T)), sizeof(T));
          std::memcpy(d + i * static_cast<int64_t>(sizeof(T)), &v, sizeof(T));
        }
      }
    }
  };
  if (a * b < kSerialWork) {
    for (int64_t t = 0; t < strips; ++t) task(t, 0);
  } else {
    ThreadPool::instance().parallel_for(strips, task);
  }
}

}  // namespace

namespace {

// x as quant_gemv reads it for q (quantize_x), in the given scratch (valid until its next use).
QuantVector quantized_x(const float* x, const QuantMatrix& q, QuantXScratch& s) {
  int8_t* xq = s.q.get<int8_t>(static_cast<size_t>(q.padded) + 64);
  float* xs = s.scale.get<float>(static_cast<size_t>(q.scale_pad));
  const int64_t nc = quant_corr_len(q);
  int32_t* corr = nc > 0 ? s.corr.get<int32_t>(static_cast<size_t>(nc)) : nullptr;
  if (corr != nullptr) std::memset(corr, 0, static_cast<size_t>(nc) * sizeof(int32_t));
  float* xsum = q.mins ? s.xsum.get<float>(static_cast<size_t>(q.scale_pad)) : nullptr;
  quantize_x(x, q.cols, q.group, q.groups, q.scale_pad, xq, xs, corr, xsum);
  return QuantVector{xq, xs, corr, xsum};
}

// f32 -> bf16, round to nearest even (NaN stays NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// relayout of a kQ8 / kQ4 weight: its values (code * scale) rounded to bf16, in either layout. 16 rows
// at a time, so the transposed writes are 16 contiguous values per memory row.
void relayout_quant(const Mat& w, bool transposed, unsigned char* dst) {
  const QuantMatrix q = quant_view(w);
  constexpr int64_t kRows = 16;
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
  split(ceil_div(w.rows, kRows), w.rows * w.cols, 1, [&](int64_t t0, int64_t t1) {
    float* rows = t_q8rows.get<float>(static_cast<size_t>(kRows * w.cols));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * kRows, nr = std::min(kRows, w.rows - r0);
      quant_dequant_rows(q, r0, nr, rows);
      for (int64_t j = 0; j < nr; ++j)
        for (int64_t c = 0; c < w.cols; ++c) {
          const uint16_t v = float_to_bf16(rows[j * w.cols + c]);
          out[transposed ? c * w.rows + r0 + j : (r0 + j) * w.cols + c] = v;
        }
    }
  });
}

}  // namespace

// Cloned for AVX2 (picked at load where the CPU has it): prefill dequantizes every panel of every
// quantized matrix, and the baseline SSE2 loop made a 256-token prefill of the 1B shape with int8
// weights 8 % slower than bf16's.
#if HIRE_X86_64 && defined(__GNUC__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
void quant_dequant_rows(const QuantMatrix& q, int64_t r0, int64_t n, float* dst) {
  for (int64_t r = r0; r < r0 + n; ++r, dst += q.cols) {
    const int8_t* codes = reinterpret_cast<const int8_t*>(q.codes(r));
    const uint16_t* sc = q.scales(r);
    if (q.bits == 4) {
      // 32-value run h: the low (h even) or high (h odd) nibbles of block h / 2 (quant.h), in one group.
      for (int64_t h = 0; 32 * h < q.cols; ++h) {
        const int64_t g = 32 * h / q.group;
        const float d = half_to_float(sc[g]);
        const unsigned char* b = reinterpret_cast<const unsigned char*>(codes) + 32 * (h / 2);
        const int shift = (h & 1) ? 4 : 0;
        const int64_t lo = 32 * h, m = std::min<int64_t>(32, q.cols - lo);
        if (q.mins) {
          const float mn = half_to_float(q.min_values(r)[g]);
          for (int64_t j = 0; j < m; ++j) dst[lo + j] = static_cast<float>((b[j] >> shift) & 15) * d + mn;
        } else {
          for (int64_t j = 0; j < m; ++j) dst[lo + j] = static_cast<float>(((b[j] >> shift) & 15) - 8) * d;
        }
      }
      continue;
    }
    for (int64_t g = 0; g < q.groups; ++g) {
      const float d = half_to_float(sc[g]);
      const int64_t lo = g * q.group, hi = std::min(q.cols, lo + q.group);
      for (int64_t c = lo; c < hi; ++c) dst[c] = static_cast<float>(codes[c]) * d;
    }
  }
}

QuantVector quant_input(const float* x, const QuantMatrix& q) { return quantized_x(x, q, t_weight_x); }

void gemv_rows_any(const KernelTable& K, const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1,
                   float* y, float* scratch) {
  if (!is_quant(w.dtype)) return K.gemv_rows(w, x, idx, i0, i1, y, scratch);
  const QuantMatrix q = quant_view(w);
  const QuantVector xv = quant_input(x, q);
  if (K.quant_gemv_rows != nullptr && K.quant_gemv_rows(q, xv, idx, i0, i1, y)) return;
  for (int64_t i = i0; i < i1; ++i) K.quant_gemv(quant_row_view(q, idx[i]), xv, y + i, 0, 1);
}

void relayout(const Mat& w, bool transposed, unsigned char* dst) {
  if (is_quant(w.dtype)) return relayout_quant(w, transposed, dst);
  const size_t es = dtype_size(w.dtype);
  const unsigned char* src = static_cast<const unsigned char*>(w.data);
  if (w.transposed == transposed) {
    const int64_t bytes = w.rows * w.cols * static_cast<int64_t>(es);
    split(bytes, bytes / 8, 4096, [&](int64_t b, int64_t e) { std::memcpy(dst + b, src + b, e - b); });
    return;
  }
  // Memory [a][b] now; [b][a] wanted.
  const int64_t a = w.transposed ? w.cols : w.rows;
  const int64_t b = w.transposed ? w.rows : w.cols;
  if (es == 4) {
    transpose_copy<uint32_t>(src, a, b, dst);
  } else {
    transpose_copy<uint16_t>(src, a, b, dst);
  }
}

void interleave_rows(const Mat& a, const Mat& b, unsigned char* dst) {
  const size_t row = static_cast<size_t>(mat_row_bytes(a));
  const unsigned char* pa = static_cast<const unsigned char*>(a.data);
  const unsigned char* pb = static_cast<const unsigned char*>(b.data);
  // Both threads copy (and fault in the fresh pages of dst): on the Zen 5 VM faulting is most of it.
  split(a.rows, a.rows * a.cols, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      std::memcpy(dst + 2 * i * row, pa + i * row, row);
      std::memcpy(dst + (2 * i + 1) * row, pb + i * row, row);
    }
  });
}

void matvec_rows(float* y, const float* x, const Mat& w, const int32_t* idx, int64_t count) {
  const KernelTable& K = active_kernels();
  split(count, count * w.cols, 4, [&](int64_t i0, int64_t i1) {
    gemv_rows_any(K, w, x, idx, i0, i1, y, t_rows.get<float>(static_cast<size_t>(w.cols) + 16));
  });
}

void accumulate_cols(float* y, const float* a, const Mat& w, const int32_t* idx, int64_t count) {
  const KernelTable& K = active_kernels();
  if (idx == nullptr) idx = identity_indices(count);
  const ColChunks ch = col_chunks(count);
  float* part = t_acc_part.get<float>(static_cast<size_t>(ch.tasks * w.rows));
  if (ch.tasks == 1 || w.rows * count < kSerialWork) return ch.serial(K, w, a, idx, part, y);
  ThreadPool::instance().parallel_for(ch.tasks, [&](int64_t t, int) { ch.partial(K, w, a, idx, part, t); });
  ch.sum(K, w.rows, part, y);
}

std::shared_ptr<QuantMatrix> quantize(const Mat& w, int bits, int64_t group) {
  auto q = std::make_shared<QuantMatrix>(QuantMatrix::shape(w.rows, w.cols, bits, group));
  q->mem = Buffer::alloc(static_cast<size_t>(q->bytes() + QuantMatrix::kQuantSlack));
  const KernelTable& K = active_kernels();
  const size_t es = dtype_size(w.dtype);
  const unsigned char* base = static_cast<const unsigned char*>(w.data);
  constexpr int64_t kRowsPerTask = 16;
  const int64_t tasks = ceil_div(w.rows, kRowsPerTask);
  const int64_t cols = w.cols;
  auto task = [&](int64_t t, int) {
    const int64_t r0 = t * kRowsPerTask, nr = std::min(kRowsPerTask, w.rows - r0);
    int8_t* codes = t_qcodes.get<int8_t>(static_cast<size_t>(q->padded) + 64);
    if (is_quant(w.dtype)) {
      float* row = t_qrow.get<float>(static_cast<size_t>(cols));
      const QuantMatrix src = quant_view(w);
      for (int64_t r = r0; r < r0 + nr; ++r) {
        quant_dequant_rows(src, r, 1, row);
        quantize_row(row, *q, r, codes);
      }
    } else if (!w.transposed) {
      float* row = t_qrow.get<float>(static_cast<size_t>(cols));
      for (int64_t r = r0; r < r0 + nr; ++r) {
        K.to_f32(w.dtype, base + static_cast<size_t>(r) * cols * es, cols, row);
        quantize_row(row, *q, r, codes);
      }
    } else {
      // Memory [cols][rows]: gather nr logical rows, 16 contiguous elements of each memory row.
      float* rows = t_qrow.get<float>(static_cast<size_t>(cols) * kRowsPerTask + kRowsPerTask);
      float* tmp = rows + cols * kRowsPerTask;
      for (int64_t c = 0; c < cols; ++c) {
        K.to_f32(w.dtype, base + (static_cast<size_t>(c) * w.rows + r0) * es, nr, tmp);
        for (int64_t j = 0; j < nr; ++j) rows[j * cols + c] = tmp[j];
      }
      for (int64_t j = 0; j < nr; ++j) quantize_row(rows + j * cols, *q, r0 + j, codes);
    }
  };
  if (w.rows * w.cols < kSerialWork) {
    for (int64_t t = 0; t < tasks; ++t) task(t, 0);
  } else {
    ThreadPool::instance().parallel_for(tasks, task);
  }
  return q;
}

void quant_row(const QuantMatrix& q, int64_t r, float* out) { quant_dequant_rows(q, r, 1, out); }

namespace {

// x as quant_gemv reads it, in the calling thread's scratch (valid until its next call).
QuantVector quantized_input(const float* x, const QuantMatrix& q) { return quantized_x(x, q, t_pred_x); }

}  // namespace

void quant_matvec(float* y, const float* x, const QuantMatrix& q) {
  const KernelTable& K = active_kernels();
  const QuantVector xv = quantized_input(x, q);
  split(q.rows, q.rows * q.padded, 4, [&](int64_t r0, int64_t r1) { K.quant_gemv(q, xv, y, r0, r1); });
}

namespace {

thread_local Scratch t_ffn_pairs;    // hire_ffn: interleaved gate/up row ids of a shard's candidates
thread_local Scratch t_ffn_rows;     // hire_ffn: the candidates' dot products (gate, up pairs)
thread_local Scratch t_ffn_g;        // hire_ffn: exact activations of the candidates
thread_local Scratch t_ffn_pos;      // hire_ffn: positions of the selected among the candidates
thread_local Scratch t_ffn_partial;  // hire_ffn: per-shard partial outputs (calling thread)

struct FfnShard {
  int64_t lo, m, kp, cand_at, k, sel_at;
  double ms[3];
};

double ms_since(std::chrono::steady_clock::time_point& t) {
  const auto now = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - t).count();
  t = now;
  return ms;
}

// scores[lo, lo + m) = act(predictor rows . x + bias_in).
void ffn_score(const KernelTable& K, const HireFfnStep& st, const QuantVector& xv, int64_t lo, int64_t m) {
  K.quant_gemv(*st.pred, xv, st.scores, lo, lo + m);
  if (st.bias_in != nullptr)
    for (int64_t i = lo; i < lo + m; ++i) st.scores[i] += st.bias_in[i];
  K.activate(st.scores + lo, m, static_cast<int>(st.act));
}

// g[i] = the exact activation of neuron cand[i], i < n: act(gate) * up from the interleaved rows, or
// act(W_in . x + bias_in).
void ffn_exact(const KernelTable& K, const HireFfnStep& st, const int32_t* cand, int64_t n, float* g) {
  const int kind = static_cast<int>(st.act);
  float* xp = t_rows.get<float>(static_cast<size_t>(st.rows.cols) + 16);
  if (!st.gated) {
    gemv_rows_any(K, st.rows, st.x, cand, 0, n, g, xp);
    if (st.bias_in != nullptr)
      for (int64_t i = 0; i < n; ++i) g[i] += st.bias_in[cand[i]];
    K.activate(g, n, kind);
    return;
  }
  // One pass over each candidate's interleaved gate/up rows (one contiguous read), then split.
  int32_t* pairs = t_ffn_pairs.get<int32_t>(static_cast<size_t>(2 * n) + 16);
  for (int64_t i = 0; i < n; ++i) {
    pairs[2 * i] = 2 * cand[i];
    pairs[2 * i + 1] = 2 * cand[i] + 1;
  }
  float* dots = t_ffn_rows.get<float>(static_cast<size_t>(2 * n) + 16);
  gemv_rows_any(K, st.rows, st.x, pairs, 0, 2 * n, dots, xp);
  float* u = dots;  // compacted in place: u[i] overwrites dots already read
  for (int64_t i = 0; i < n; ++i) {
    g[i] = dots[2 * i];
    u[i] = dots[2 * i + 1];
  }
  if (st.act == Activation::kSilu) {
    K.silu_mul(g, u, n);
  } else {
    K.activate(g, n, kind);
    for (int64_t i = 0; i < n; ++i) g[i] *= u[i];
  }
}

// One shard of hire_ffn, start to finish on the calling thread; writes partial[0, down.rows).
void ffn_shard(const KernelTable& K, const HireFfnStep& st, const QuantVector& xv, FfnShard& d, float* partial) {
  auto t = std::chrono::steady_clock::now();
  ffn_score(K, st, xv, d.lo, d.m);
  int32_t* cand = st.cand + d.cand_at;
  topk_shard(st.scores, d.lo, d.m, d.kp, true, cand);
  d.ms[0] = ms_since(t);

  float* g = t_ffn_g.get<float>(static_cast<size_t>(d.kp) + 16);
  ffn_exact(K, st, cand, d.kp, g);
  int32_t* pos = t_ffn_pos.get<int32_t>(static_cast<size_t>(d.k) + 16);
  topk_shard(g, 0, d.kp, d.k, true, pos);
  int32_t* sel = st.sel + d.sel_at;
  float* a = st.a_sel + d.sel_at;
  for (int64_t j = 0; j < d.k; ++j) {
    sel[j] = cand[pos[j]];
    a[j] = g[pos[j]];
  }
  d.ms[1] = ms_since(t);

  // The shard's columns in accumulate_cols' chunks, on this thread: the same sums as that op.
  const ColChunks ch = col_chunks(d.k);
  ch.serial(K, st.down, a, sel, t_acc_part.get<float>(static_cast<size_t>(ch.tasks * st.down.rows)), partial);
  d.ms[2] = ms_since(t);
}

thread_local Scratch t_head_cand;  // hire_head: each chunk's candidates, then the merged ones
thread_local Scratch t_head_g;     // hire_head: the candidates' exact logits, then their union's scores
thread_local Scratch t_head_pos;   // hire_head: positions picked among the candidates

// P = 1, the global top-k: each step parallel inside, with the selections and bits of the separate
// ops (quant_matvec, topk, matvec_rows, topk, accumulate_cols) but no return to JavaScript between
// them (on the Xeon VM JavaScript time per token fell from 1.26 to 0.83 ms).
// Parallel slices are multiples of 16 values, so no element moves between a kernel's vector body
// and its tail.
void hire_ffn_global(const KernelTable& K, HireFfnStep& st) {
  const int64_t F = st.pred->rows;
  auto t = std::chrono::steady_clock::now();
  const QuantVector xv = quantized_input(st.x, *st.pred);
  split(F, F * st.pred->padded, 16, [&](int64_t r0, int64_t r1) { ffn_score(K, st, xv, r0, r1 - r0); });
  const int64_t nc = topk(st.scores, F, std::min(st.kp, F), true, 1, st.cand);
  st.ms[0] = ms_since(t);

  float* g = t_ffn_g.get<float>(static_cast<size_t>(nc) + 16);
  split(nc, nc * st.rows.cols * (st.gated ? 2 : 1), 16,
        [&](int64_t i0, int64_t i1) { ffn_exact(K, st, st.cand + i0, i1 - i0, g + i0); });
  int32_t* pos = t_ffn_pos.get<int32_t>(static_cast<size_t>(nc) + 16);
  const int64_t ns = topk(g, nc, std::min(st.k, nc), true, 1, pos);
  for (int64_t j = 0; j < ns; ++j) {
    st.sel[j] = st.cand[pos[j]];
    st.a_sel[j] = g[pos[j]];
  }
  st.ms[1] = ms_since(t);

  accumulate_cols(st.y, st.a_sel, st.down, st.sel, ns);
  st.ms[2] = ms_since(t);
  st.n_cand = nc;
  st.n_sel = ns;
}

}  // namespace

// One job scores the vocabulary, fills the logits with -inf and picks each part's candidates on the
// thread that scored it (the scores are still warm there): the P shards of DA-top-k, or at P = 1 a
// contiguous part per thread whose local top-kp holds every global candidate inside it; a serial
// selection over the union of those short lists then gives topk's global top-kp (the union is in
// index order, so ties still go to the lower index). Then the candidates' exact rows, and their top-k.
void hire_head(HireHeadStep& st) {
  const KernelTable& K = active_kernels();
  const int64_t V = st.pred->rows, P = st.shards;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t parts = P > 1 ? P : std::min<int64_t>(pool.threads(), std::max<int64_t>(1, V / 4096));
  std::vector<int64_t> lo(static_cast<size_t>(parts) + 1), ks(static_cast<size_t>(parts)), at(static_cast<size_t>(parts) + 1);
  for (int64_t c = 0; c < parts; ++c) {
    int64_t m = 0;
    if (P > 1) {
      topk_shard_range(V, st.kp, P, c, &lo[c], &m, &ks[c]);
      if (st.kp >= V) ks[c] = m;
    } else {
      lo[c] = c * V / parts;
      m = (c + 1) * V / parts - lo[c];
      ks[c] = std::min(st.kp, m);
    }
    at[c + 1] = at[c] + ks[c];
  }
  lo[parts] = V;
  int32_t* cand = t_head_cand.get<int32_t>(static_cast<size_t>(at[parts]) + 16);
  const QuantVector xv = quantized_input(st.x, *st.pred);
  pool.parallel_for(parts, [&](int64_t c, int) {
    const int64_t a = lo[c], b = lo[c + 1];
    K.quant_gemv(*st.pred, xv, st.scores, a, b);  // each row on its own: quant_matvec's bits
    std::fill(st.logits + a, st.logits + b, -INFINITY);
    topk_shard(st.scores, a, b - a, ks[c], false, cand + at[c]);
  });
  int64_t nc = at[parts];
  if (P == 1 && parts > 1 && nc > st.kp) {  // the global top-kp of the parts' candidates
    float* u = t_head_g.get<float>(static_cast<size_t>(nc) + 16);
    for (int64_t j = 0; j < nc; ++j) u[j] = st.scores[cand[j]];
    int32_t* pos = t_head_pos.get<int32_t>(static_cast<size_t>(st.kp) + 16);
    topk(u, nc, st.kp, false, 1, pos);
    for (int64_t j = 0; j < st.kp; ++j) cand[j] = cand[pos[j]];  // pos ascending: cand[j] is not read again
    nc = st.kp;
  }
  float* g = t_head_g.get<float>(static_cast<size_t>(nc) + 16);
  matvec_rows(g, st.x, st.head, cand, nc);
  int32_t* pos = t_head_pos.get<int32_t>(static_cast<size_t>(nc) + 16);
  const int64_t ns = topk(g, nc, std::min(st.k, nc), false, P, pos);
  for (int64_t j = 0; j < ns; ++j) st.logits[cand[pos[j]]] = g[pos[j]];
  st.n_cand = nc;
  st.n_sel = ns;
}

void hire_ffn_batch(HireFfnStep* const* steps, int64_t n) {
  const KernelTable& K = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  pool.parallel_for(n, [&](int64_t i, int) {
    HireFfnStep& st = *steps[i];
    const int64_t F = st.pred->rows;
    const QuantVector xv = quantized_input(st.x, *st.pred);  // this worker's scratch
    const int64_t kp = std::min(st.kp, F);
    FfnShard d{0, F, kp, 0, std::min(st.k, kp), 0, {0, 0, 0}};
    ffn_shard(K, st, xv, d, st.y);
    // Steps run concurrently: each one's share of the wall time is its own time over the workers.
    const double workers = static_cast<double>(std::min<int64_t>(n, pool.threads()));
    for (int j = 0; j < 3; ++j) st.ms[j] = d.ms[j] / workers;
    st.n_cand = d.kp;
    st.n_sel = d.k;
  });
}

void hire_ffn(HireFfnStep& st) {
  const KernelTable& K = active_kernels();
  const int64_t F = st.pred->rows, P = st.shards, out = st.down.rows;
  if (P == 1) return hire_ffn_global(K, st);
  ThreadPool& pool = ThreadPool::instance();
  // The shards of the two selections, as topk(values, F, kp, P) and topk(g, n_cand, k, P) cut them:
  // shard s of the second is exactly the candidates shard s of the first chose.
  std::vector<FfnShard> sh(static_cast<size_t>(P));
  int64_t nc = 0, ns = 0;
  for (int64_t s = 0; s < P; ++s) {
    FfnShard& d = sh[s];
    topk_shard_range(F, st.kp, P, s, &d.lo, &d.m, &d.kp);
    if (st.kp >= F) d.kp = d.m;
    d.cand_at = nc;
    nc += d.kp;
  }
  for (int64_t s = 0; s < P; ++s) {
    FfnShard& d = sh[s];
    int64_t lo, m;
    topk_shard_range(nc, st.k, P, s, &lo, &m, &d.k);
    if (lo != d.cand_at || m != d.kp)
      throw std::invalid_argument("hire_ffn: kp must be a multiple of shards or cover every neuron");
    if (st.k >= nc) d.k = m;
    d.sel_at = ns;
    ns += d.k;
  }
  const QuantVector xv = quantized_input(st.x, *st.pred);
  float* partial = t_ffn_partial.get<float>(static_cast<size_t>(P * out) + 16);
  pool.parallel_for(P, [&](int64_t s, int) { ffn_shard(K, st, xv, sh[s], partial + s * out); });
  std::memcpy(st.y, partial, static_cast<size_t>(out) * sizeof(float));
  for (int64_t s = 1; s < P; ++s) K.add(st.y, partial + s * out, out);
  st.n_cand = nc;
  st.n_sel = ns;
  // Shards run concurrently, so a step's wall time is about its summed shard time over the workers.
  const double workers = static_cast<double>(std::min<int64_t>(P, pool.threads()));
  for (int i = 0; i < 3; ++i) {
    st.ms[i] = 0;
    for (const FfnShard& d : sh) st.ms[i] += d.ms[i];
    st.ms[i] /= workers;
  }
}

}  // namespace hire
