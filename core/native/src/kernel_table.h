// Per-path primitive kernels (one KernelTable per instruction set) that ops.cc composes into ops.
// Each primitive is single-threaded and works on a slice chosen by ops.cc; all of them must give
// results that do not depend on how ops.cc slices the work. To add a primitive: add a pointer here,
// implement it in kernels_portable.cc and kernels_avx2.cc, and fill both tables (the avx512 table,
// kernels_avx512.cc, is the avx2 one with its own versions of a few primitives).
#pragma once
#include <cstddef>
#include <cstdint>

#include "dtype.h"
#include "quant.h"

// x86-64 builds carry the AVX2 path (enabled per function, picked at run time); define
// HIRE_PORTABLE_ONLY to build the portable kernels alone.
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(HIRE_PORTABLE_ONLY)
#define HIRE_X86_64 1
#else
#define HIRE_X86_64 0
#endif

namespace hire {

// How far ahead a linear stream prefetches.
constexpr int64_t kAheadBytes = 8192;

// Per-line software prefetch into L2 (prefetcht1), the AVX2 kernels' policy: on the Intel Xeon VMs an
// L1 prefetch tied up one of the few L1 miss buffers per line and capped a core's stream (bf16 GEMV on
// 2 cores: 22.0 GB/s with L1 prefetches, 26.4 with L2 ones, 25.9 with none). The AVX2 GEMV reads 4
// rows side by side, and on the Zen 5 VM it kept this policy: with page heads (below) instead it read
// 44 GB/s against 51 (same process phase, two runs each).
inline void prefetch_weights(const void* p) { __builtin_prefetch(p, 0, 2); }

// prefetch_weights for every cache line of [p, p + bytes).
inline void prefetch_span(const void* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64) prefetch_weights(static_cast<const unsigned char*>(p) + o);
}

// Page-head prefetching: one prefetchnta per 4 KiB page, of the page's first line. The hardware
// prefetchers stop at page boundaries and need a few misses to lock on again; a prefetch of the page
// head starts them early, and they stream the rest of the page without taking the core's L1 miss
// buffers, which a software prefetch of every line does. On the AMD EPYC (Zen 5) VM a harness read
// 72-82 GB/s this way (2 cores, 2-128 MiB per matrix, 8 KiB ahead) against 42-55 prefetching every
// line 8 KiB ahead (t2, t1 or nta) and 54-64 with no software prefetch. (Earlier sessions, on Intel
// Xeon VMs, measured per-line prefetches only: there prefetcht1 beat prefetcht0 by 20 % and per-line
// prefetches beat none by 25-30 %; page heads were not tried there.)
constexpr uintptr_t kPage = 4096;

inline void prefetch_page_head(const void* p) { __builtin_prefetch(p, 0, 0); }

// True for the one line of each page a linear walk over 64-byte steps visits first.
inline bool starts_page(const void* p) { return (reinterpret_cast<uintptr_t>(p) & (kPage - 1)) < 64; }

// For a linear walk in 64-byte lines, called at each line: at the first line of a page, the head of
// the page kAheadBytes on, while that lies before end.
inline void prefetch_stream_ahead(const void* line, const void* end) {
  const unsigned char* ahead = static_cast<const unsigned char*>(line) + kAheadBytes;
  if (starts_page(line) && ahead < static_cast<const unsigned char*>(end)) prefetch_page_head(ahead);
}

// The heads of the pages that start inside [p, p + bytes): a stream cut into pieces (rows) gets each
// page's head prefetched exactly once.
inline void prefetch_page_heads(const void* p, int64_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), end = a + static_cast<uintptr_t>(bytes);
  for (uintptr_t q = (a + kPage - 1) & ~(kPage - 1); q < end; q += kPage)
    prefetch_page_head(reinterpret_cast<const void*>(q));
}

// A loop that does more per line than read it (the bf16 GEMV's shift, mask, two FMAs and two loads of
// x) keeps too few lines in flight on the page-head prefetch alone: the reorder buffer fills with
// iterations waiting on DRAM. The bf16 GEMV also prefetches each line kLineAhead bytes before it reads
// it: on the Zen 5 VM, switched back and forth inside one process, its 1B model matrices read 62-63
// GB/s against 49-50 (a harness loop over 4 KiB rows: one core 28 -> 38-39, two 55 -> 64-66). The
// same per-line prefetch measured no gain in the gathered rows or the down product.
constexpr int64_t kLineAhead = 2048;
inline void prefetch_line(const void* p) { __builtin_prefetch(p, 0, 0); }

// The int4/int8 scoring GEMV prefetches each line kQuantLineAhead bytes ahead into L1 (prefetcht0;
// the non-temporal hint and shorter distances, tried in earlier sessions, gained nothing). On the
// Zen 5 VM, alternated inside one process over 16 FFN predictors and the 1B model's int4 head, it
// read 37.0-37.2 GB/s (medians of 10 alternations) against 25.6-27.3 with page heads alone; 8 KiB
// ahead measured the same as 4, 1 KiB 33; prefetcht1 got two thirds of the gain, prefetcht2 less.
// Not measured on Intel, where L1 prefetches once capped the AVX2 GEMV (see prefetch_weights).
constexpr int64_t kQuantLineAhead = 4096;
inline void prefetch_l1(const void* p) { __builtin_prefetch(p, 0, 3); }

// A scattered piece (a gathered row or column): its first line and the heads of the further pages it
// touches.
inline void prefetch_piece(const void* p, int64_t bytes) {
  prefetch_page_head(p);
  prefetch_page_heads(static_cast<const unsigned char*>(p) + 1, bytes - 1);
}

// Width of a packed GEMM panel (output rows per panel), panels per gemm_panels call (at most), and
// tokens per AVX2 micro-kernel call.
constexpr int kPanel = 16;
constexpr int kGemmPanels = 2;
constexpr int kTokBlock = 6;

// gemm_panels from a kernel of one panel (same arguments with one panel, nr <= kPanel): the panels
// one after another.
template <class OnePanel>
inline void each_panel(OnePanel one, const float* x, int64_t ldx, int64_t nt, const float* panels, int np, int64_t k,
                       const float* bias, float* y, int64_t ldy, int64_t nr) {
  for (int p = 0; p < np; ++p) {
    const int64_t left = nr - p * kPanel;
    one(x, ldx, nt, panels + p * k * kPanel, k, bias + p * kPanel, y + p * kPanel, ldy, left < kPanel ? left : kPanel);
  }
}

// The keys and values one query attends to, in position order: rows [0, split) start at k and v,
// the rest at k2 and v2. A ring-buffer cache (sliding-window layers) wraps at most once within a
// window, so two runs of contiguous rows always cover it.
struct KvRows {
  const void *k, *v, *k2, *v2;
  int64_t split;
  bool f16;  // rows of IEEE halves (an f16 KV cache), else floats
  int64_t elem_bytes() const { return f16 ? 2 : 4; }
  const unsigned char* key(int64_t j, int64_t d) const { return row(k, k2, j, d); }
  const unsigned char* value(int64_t j, int64_t d) const { return row(v, v2, j, d); }
  const unsigned char* row(const void* base, const void* base2, int64_t j, int64_t d) const {
    return j < split ? static_cast<const unsigned char*>(base) + j * d * elem_bytes()
                     : static_cast<const unsigned char*>(base2) + (j - split) * d * elem_bytes();
  }
  // Element i of a key or value row, as a float.
  float at(const unsigned char* row, int64_t i) const { return load_elem(f16 ? kF16 : kF32, row, i); }
  // Every line of key (value) rows [a, b) into L2, b clipped to the range's len rows.
  void prefetch_keys(int64_t a, int64_t b, int64_t len, int64_t d) const { prefetch_rows(k, k2, a, b, len, d); }
  void prefetch_values(int64_t a, int64_t b, int64_t len, int64_t d) const { prefetch_rows(v, v2, a, b, len, d); }
  void prefetch_rows(const void* base, const void* base2, int64_t a, int64_t b, int64_t len, int64_t d) const {
    b = b < len ? b : len;
    const int64_t m = b < split ? b : split, a2 = a > split ? a : split;
    if (a < m) prefetch_span(row(base, base2, a, d), (m - a) * d * elem_bytes());
    if (a2 < b) prefetch_span(row(base, base2, a2, d), (b - a2) * d * elem_bytes());
  }
};

// How far ahead of the block they read the attention kernels prefetch keys and values. Alternated
// over builds in one microbenchmark (Llama 3.2 1B's shape, 4000 positions, 2 threads, the AVX-512
// kernel), every line into L2 16 KiB ahead read 10.2-10.5 ms a token against 10.4-12.2 for page
// heads 8 KiB ahead, L1 prefetches or none.
constexpr int64_t kAttnAheadBytes = 16384;

struct KernelTable {
  const char* name;
  // Non-transposed W: y[r] = dot(W[r][:], x) for r in [r0, r1). scratch: >= cols floats.
  void (*gemv)(const Mat& w, const float* x, float* y, int64_t r0, int64_t r1, float* scratch);
  // Pack logical rows r0 .. r0+nr (nr <= kPanel) of W, any layout, as f32 panel[k][kPanel],
  // zero-padding rows >= nr. panel is 64-byte aligned and holds cols * kPanel floats.
  void (*pack_panel)(const Mat& w, int64_t r0, int64_t nr, float* panel);
  // y[t][j] = dot(x[t][:], column j of the panels) + bias[j] for t < nt, j < nr (y already offset to
  // the first panel's row): np (1 .. kGemmPanels) packed panels one after the other (k * kPanel floats
  // each), nr <= np * kPanel rows, bias np * kPanel values.
  void (*gemm_panels)(const float* x, int64_t ldx, int64_t nt, const float* panels, int np, int64_t k,
                      const float* bias, float* y, int64_t ldy, int64_t nr);
  // Panels gemm_panels reads side by side in one pass over the tokens. ops.cc packs this many at a
  // time, right before the call, so that they are still in L2 while every token reads them.
  int gemm_pass_panels;
  // dst[i] = f32(src[i]) for i < count (src at any alignment).
  void (*to_f32)(int dtype, const void* src, int64_t count, float* dst);
  void (*rms_norm_row)(float* y, const float* x, const void* g, int g_dtype, int64_t dim, float eps);
  void (*layer_norm_row)(float* y, const float* x, const void* g, int g_dtype, const void* b,
                         int b_dtype, int64_t dim, float eps);
  void (*softmax_row)(float* x, int64_t dim);
  void (*silu_mul)(float* gate, const float* up, int64_t count);
  void (*activate)(float* x, int64_t count, int kind);
  void (*add)(float* y, const float* x, int64_t count);
  // One token: every head of x[n_heads][head_dim] rotated by cos/sin[half].
  void (*rope_token)(float* x, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin,
                     int64_t half);
  // Attention of `group` query heads (q: group rows of d floats, the heads that share one key/value
  // head) over the keys and values 0 .. len - 1 of kv, each key and value read once for the whole
  // group. Per head g it writes part[g * (d + 2) ..] = [m, l, acc[0 .. d)], unnormalized so that
  // partials over position ranges merge: m = max_j s_j, l = sum_j exp(s_j - m), acc = sum_j
  // exp(s_j - m) v_j, with s_j = scale * q.k_j, or softcap * tanh(s_j / softcap) when softcap > 0
  // (Gemma 2). len may be 0 (m = -inf, l = 0, acc = 0). scores: thread scratch of >= group * len floats.
  void (*attn_part)(float* part, const float* q, const KvRows& kv, int64_t len, int64_t d, int64_t group,
                    float scale, float softcap, float* scores);
  // For the bandwidth probe: a value that depends on all count floats (64-byte aligned), read once.
  float (*read_sum)(const float* p, size_t count);

  // ---- HiRE sparse primitives (ops in sparse_ops.cc) ----
  // Selected rows, W not transposed: y[i] = dot(W[idx[i]][:], x) for i in [i0, i1), each summed
  // exactly like gemv sums that row. scratch: >= cols + 16 floats.
  void (*gemv_rows)(const Mat& w, const float* x, const int32_t* idx, int64_t i0, int64_t i1, float* y,
                    float* scratch);
  // Selected columns, W transposed (memory [cols][rows]): y[r] = sum_{i < count} a[i] * Wmem[idx[i]][r]
  // for r in [r0, r1), overwriting y there; summed in i order. The transposed GEMV is this with
  // idx = 0..cols-1 (ops.cc).
  void (*accumulate_cols)(const Mat& w, const float* a, const int32_t* idx, int64_t count, float* y, int64_t r0,
                          int64_t r1);
  // y[r] = sum_g scale_w[r][g] * x.scale[g] * sum_{j in g} q[r][j] * x.q[j] for r in [r0, r1).
  void (*quant_gemv)(const QuantMatrix& q, const QuantVector& x, float* y, int64_t r0, int64_t r1);
  // Optional: y[i] = quant_gemv's value of row idx[i] for i in [i0, i1), each row as quant_gemv sums
  // it; false (nothing written) for a format it does not take. Null: rows one at a time by quant_gemv.
  bool (*quant_gemv_rows)(const QuantMatrix& q, const QuantVector& x, const int32_t* idx, int64_t i0, int64_t i1,
                          float* y) = nullptr;
};

extern const KernelTable kPortableKernels;
// nullptr when this build has no AVX2 path (non-x86-64).
const KernelTable* avx2_kernels();
// The AVX2 table with AVX-512 versions of a few primitives (kernels_avx512.cc); nullptr where avx2_kernels() is.
const KernelTable* avx512_kernels();
// The table ops should use now (set by set_kernel_path).
const KernelTable& active_kernels();

}  // namespace hire
