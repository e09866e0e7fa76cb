// Ops (kernels.h) built from the active KernelTable: work splitting over the thread pool, GEMM
// panel tiling, per-thread scratch, and kernel-path selection. Small problems stay on the calling
// thread (below kSerialWork multiply-adds a dispatch costs more than it saves).
// To add an op: write its loop here over a table primitive and declare it in kernels.h.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_table.h"
#include "kernels.h"
#include "scratch.h"
#include "sparse.h"
#include "threadpool.h"

namespace hire {
namespace {

constexpr int64_t kSerialWork = 1 << 15;

thread_local Scratch t_scratch_a;  // GEMM panels, attention scores
thread_local Scratch t_scratch_b;  // small per-task buffers
thread_local Scratch t_attn_parts;  // attention's per-task partials, owned by the calling thread
thread_local Scratch t_q8_panel;    // GEMM with a kQ8 / kQ4 weight: a panel's rows dequantized
// Attention aims for this many tasks per call, with ranges of at least kAttnMinRange positions.
constexpr int64_t kAttnTasks = 32;
constexpr int64_t kAttnMinRange = 128;
// Prefill attends in blocks of this many consecutive tokens (see attention).
constexpr int64_t kAttnTile = 8;

CpuFeatures detect() {
  CpuFeatures f{};
#if HIRE_X86_64 && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

// The tables this CPU can run, best first; the portable one always last.
std::vector<const KernelTable*> usable_tables() {
  const CpuFeatures f = detect();
  std::vector<const KernelTable*> t;
  const bool avx2 = avx2_kernels() != nullptr && f.avx2 && f.fma && f.f16c;
  if (avx2 && f.avx512vnni && avx512_kernels() != nullptr) t.push_back(avx512_kernels());
  if (avx2) t.push_back(avx2_kernels());
  t.push_back(&kPortableKernels);
  return t;
}

const KernelTable* best_table() { return usable_tables().front(); }

std::atomic<const KernelTable*> g_table{best_table()};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Split `total` items into at most `parts` contiguous chunks whose size is a multiple of `align`.
inline int64_t chunk_size(int64_t total, int64_t parts, int64_t align) {
  return std::max<int64_t>(align, ceil_div(ceil_div(total, parts), align) * align);
}

// y[i] += bias[i] for i in [r0, r1).
void add_bias(const KernelTable& K, float* y, const Mat& bias, int64_t r0, int64_t r1) {
  float buf[256];
  const size_t es = dtype_size(bias.dtype);
  for (int64_t c = r0; c < r1; c += 256) {
    const int64_t len = std::min<int64_t>(256, r1 - c);
    K.to_f32(bias.dtype, static_cast<const unsigned char*>(bias.data) + c * es, len, buf);
    K.add(y + c, buf, len);
  }
}

// Elementwise ops: one cache-line-aligned chunk per thread once count is large enough.
template <class F>
void parallel_range(int64_t count, F&& fn) {
  ThreadPool& pool = ThreadPool::instance();
  if (count < 4 * kSerialWork || pool.threads() == 1) {
    fn(int64_t{0}, count);
    return;
  }
  const int64_t chunk = chunk_size(count, pool.threads(), 16);
  pool.parallel_for(ceil_div(count, chunk), [&](int64_t t, int) {
    const int64_t b = t * chunk;
    fn(b, std::min(count, b + chunk));
  });
}

// Row ops: rows over the pool once the whole op is big enough.
template <class F>
void parallel_rows(int64_t n, int64_t work_per_row, F&& fn) {
  ThreadPool& pool = ThreadPool::instance();
  if (n == 1 || n * work_per_row < 2 * kSerialWork || pool.threads() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // A few contiguous runs of rows per thread: rows are cheap, the shared task counter is not.
  const int64_t runs = std::min<int64_t>(n, 4 * pool.threads());
  pool.parallel_for(runs, [&](int64_t r, int) {
    for (int64_t i = r * n / runs; i < (r + 1) * n / runs; ++i) fn(i);
  });
}

void gemm(const KernelTable& K, float* y, const float* x, const Mat& w, int64_t n, const Mat* bias) {
  const int64_t rows = w.rows, cols = w.cols;
  const int64_t n_panels = ceil_div(rows, kPanel);
  // kGemmPanels panels (32 outputs) per task: for transposed weights this covers whole cache lines.
  const int64_t n_tasks = ceil_div(n_panels, kGemmPanels);
  auto task = [&](int64_t t, int) {
    float* panels = t_scratch_a.get<float>(static_cast<size_t>(cols) * kPanel * kGemmPanels);
    alignas(64) float bias_buf[kPanel * kGemmPanels];
    const int64_t p0 = t * kGemmPanels, np = std::min<int64_t>(n_panels - p0, kGemmPanels);
    const int64_t r0 = p0 * kPanel, nr = std::min<int64_t>(rows - r0, np * kPanel);
    std::memset(bias_buf, 0, sizeof(bias_buf));
    if (bias != nullptr)
      K.to_f32(bias->dtype, static_cast<const unsigned char*>(bias->data) + r0 * dtype_size(bias->dtype), nr,
               bias_buf);
    for (int64_t p = 0; p < np; p += K.gemm_pass_panels) {
      const int pass = static_cast<int>(std::min<int64_t>(K.gemm_pass_panels, np - p));
      for (int64_t q = p; q < p + pass; ++q) {
        const int64_t pr0 = r0 + q * kPanel, pnr = std::min<int64_t>(kPanel, nr - q * kPanel);
        float* panel = panels + q * cols * kPanel;
        if (is_quant(w.dtype)) {
          // Prefill multiplies the dequantized values in f32 (exact products of code and scale).
          float* rows_f32 = t_q8_panel.get<float>(static_cast<size_t>(kPanel * cols));
          quant_dequant_rows(quant_view(w), pr0, pnr, rows_f32);
          K.pack_panel(Mat{rows_f32, kF32, pnr, cols, false}, 0, pnr, panel);
        } else {
          K.pack_panel(w, pr0, pnr, panel);
        }
      }
      K.gemm_panels(x, cols, n, panels + p * cols * kPanel, pass, cols, bias_buf + p * kPanel, y + r0 + p * kPanel,
                    rows, nr - p * kPanel);
    }
  };
  if (n * rows * cols < kSerialWork) {
    for (int64_t t = 0; t < n_tasks; ++t) task(t, 0);
  } else {
    ThreadPool::instance().parallel_for(n_tasks, task);
  }
}

}  // namespace

const KernelTable& active_kernels() { return *g_table.load(std::memory_order_relaxed); }

CpuFeatures cpu_features() { return detect(); }

std::vector<std::string> kernel_paths() {
  std::vector<std::string> names;
  for (const KernelTable* t : usable_tables()) names.emplace_back(t->name);
  return names;
}

bool set_kernel_path(const std::string& name) {
  if (name == "auto") {
    g_table.store(best_table());
    return true;
  }
  for (const KernelTable* t : usable_tables()) {
    if (name == t->name) {
      g_table.store(t);
      return true;
    }
  }
  return false;
}

const char* kernel_path_name() { return active_kernels().name; }

void matmul(float* y, const float* x, const Mat& w, int64_t n, const Mat* bias) {
  const KernelTable& K = active_kernels();
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols == 0) {
    for (int64_t t = 0; t < n; ++t) {
      std::fill(y + t * w.rows, y + (t + 1) * w.rows, 0.0f);
      if (bias != nullptr) add_bias(K, y + t * w.rows, *bias, 0, w.rows);
    }
    return;
  }
  if (n > 1) {
    gemm(K, y, x, w, n, bias);
    return;
  }
  if (w.transposed) {
    // Memory [cols][rows]: every column in order, as HiRE's down product sums its selected ones.
    accumulate_cols(y, x, w, nullptr, w.cols);
    if (bias != nullptr) add_bias(K, y, *bias, 0, w.rows);
    return;
  }
  const MatvecPart part{y, w, bias};
  matvec_many(x, &part, 1);
}

void matvec_many(const float* x, const MatvecPart* parts, int64_t count) {
  const KernelTable& K = active_kernels();
  if (count <= 0) return;
  const int64_t cols = parts[0].w.cols;
  // Quantized parts multiply x quantized once, here on the calling thread (the tasks share it);
  // quant_input's scratch holds one vector, so every quantized part must have the same group size (a
  // model's do). x is quantized for the part that needs the most of it (int4 with mins: codes,
  // scales, corrections and sums; int4: no sums; int8: codes and scales), which serves them all: a
  // GGUF's Q4_K and Q6_K matrices side by side load as int4 with mins and int8.
  const Mat* most = nullptr;
  for (int64_t p = 0; p < count; ++p) {
    const Mat& w = parts[p].w;
    if (!is_quant(w.dtype)) continue;
    if (most != nullptr && w.group != most->group)
      throw std::invalid_argument("matvec_many: quantized weights of different group sizes in one call");
    const auto need = [](int dt) { return dt == kQ4M ? 2 : dt == kQ4 ? 1 : 0; };
    if (most == nullptr || need(w.dtype) > need(most->dtype)) most = &w;
  }
  const QuantVector xq = most != nullptr ? quant_input(x, quant_view(*most)) : QuantVector{};
  int64_t rows = 0;
  for (int64_t p = 0; p < count; ++p) rows += parts[p].w.rows;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t n_parts = (rows * cols < kSerialWork) ? 1 : pool.threads();
  // The parts' rows as one range cut into one contiguous chunk per thread, so each thread streams its
  // own run of the matrices: on the 1B model q, k and v took 184-199 us per layer this way against
  // 202-211 as three matmuls (fewer dispatches and stream starts).
  const int64_t chunk = chunk_size(rows, n_parts, 4);
  const int64_t n_tasks = ceil_div(rows, chunk);
  auto task = [&](int64_t t, int) {
    const int64_t r0 = t * chunk, r1 = std::min(rows, r0 + chunk);
    float* scratch = t_scratch_b.get<float>(static_cast<size_t>(cols) + 16);
    int64_t first = 0;  // first row of part p in the joint range
    for (int64_t p = 0; p < count && first < r1; first += parts[p].w.rows, ++p) {
      const int64_t a = std::max(r0, first) - first, b = std::min(r1, first + parts[p].w.rows) - first;
      if (a >= b) continue;
      if (is_quant(parts[p].w.dtype)) {
        K.quant_gemv(quant_view(parts[p].w), xq, parts[p].y, a, b);
      } else {
        K.gemv(parts[p].w, x, parts[p].y, a, b, scratch);
      }
      if (parts[p].bias != nullptr) add_bias(K, parts[p].y, *parts[p].bias, a, b);
    }
  };
  if (n_tasks == 1) {
    task(0, 0);
  } else {
    pool.parallel_for(n_tasks, task);
  }
}

void embed(float* y, const Mat& w, const int32_t* ids, int64_t n, float scale) {
  const KernelTable& K = active_kernels();
  const size_t row_bytes = static_cast<size_t>(mat_row_bytes(w));
  parallel_rows(n, w.cols, [&](int64_t i) {
    float* row = y + i * w.cols;
    if (is_quant(w.dtype)) {
      quant_dequant_rows(quant_view(w), ids[i], 1, row);
    } else {
      K.to_f32(w.dtype, static_cast<const unsigned char*>(w.data) + ids[i] * row_bytes, w.cols, row);
    }
    if (scale != 1.0f)
      for (int64_t j = 0; j < w.cols; ++j) row[j] *= scale;
  });
}

void rms_norm(float* y, const float* x, const Mat& g, int64_t n, int64_t dim, float eps) {
  const KernelTable& K = active_kernels();
  parallel_rows(n, dim, [&](int64_t i) { K.rms_norm_row(y + i * dim, x + i * dim, g.data, g.dtype, dim, eps); });
}

void layer_norm(float* y, const float* x, const Mat& g, const Mat& b, int64_t n, int64_t dim, float eps) {
  const KernelTable& K = active_kernels();
  parallel_rows(n, dim, [&](int64_t i) {
    K.layer_norm_row(y + i * dim, x + i * dim, g.data, g.dtype, b.data, b.dtype, dim, eps);
  });
}

void rope(float* x, int64_t n, int64_t n_heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq, int64_t half, float factor) {
  if (half <= 0) return;
  const KernelTable& K = active_kernels();
  parallel_rows(n, n_heads * head_dim, [&](int64_t i) {
    float* cs = t_scratch_b.get<float>(static_cast<size_t>(2 * half));
    float* sn = cs + half;
    // cos/sin of pos * inv_freq in double, rounded once to f32, then times the factor in f32 (as
    // transformers scales its f32 tables).
    const double pos = positions[i];
    for (int64_t j = 0; j < half; ++j) {
      const double a = pos * static_cast<double>(inv_freq[j]);
      cs[j] = static_cast<float>(std::cos(a)) * factor;
      sn[j] = static_cast<float>(std::sin(a)) * factor;
    }
    K.rope_token(x + i * n_heads * head_dim, n_heads, head_dim, cs, sn, half);
  });
}

void attention(float* out, const float* q, const void* k_cache, const void* v_cache, int64_t n,
               int64_t n_heads, int64_t n_kv, int64_t head_dim, int64_t pos0, int64_t capacity, float scale,
               int64_t window, float softcap, bool kv_f16) {
  const KernelTable& K = active_kernels();
  const int64_t group = n_heads / n_kv;
  const int64_t d = head_dim;
  // Token i sees positions [first_seen(i), pos0 + i + 1): the last `window` of them when windowed.
  auto first_seen = [&](int64_t i) {
    const int64_t end = pos0 + i + 1;
    return window > 0 && end > window ? end - window : 0;
  };
  // Queries go in blocks of T consecutive tokens (one token when decoding). The positions every token
  // of a block sees, [lo_all, hi_all), are read once for all of them: a task hands the block's
  // T * group query heads of one key/value head to attn_part, which loads each key and value row once
  // for all its heads. The few positions only some of the block's tokens see (the later tokens' own,
  // the earlier ones' oldest in a window) are each token's own, in two more ranges.
  // Tasks are (block, key/value head, range of the shared positions): the positions split into S
  // ranges so that decoding with one or two key/value heads (Gemma, Qwen2.5) still gives every thread
  // work. T and S depend on the shapes only, never on the thread count, so the result has the same
  // bits on any number of threads.
  const int64_t T = n == 1 ? 1 : kAttnTile;
  const int64_t blocks = (n + T - 1) / T;
  const int64_t most = window > 0 ? std::min(pos0 + n, window) : pos0 + n;  // the longest a query sees
  const int64_t pairs = blocks * n_kv;
  const int64_t S = std::max<int64_t>(1, std::min((kAttnTasks + pairs - 1) / pairs, most / kAttnMinRange));
  const int64_t head_len = d + 2;  // one head's partial: [m, l, acc[0 .. d)]
  const int64_t part_len = T * group * head_len;
  const int64_t own_len = 2 * group * head_len;  // one token's two ranges of its own
  float* parts = t_attn_parts.get<float>(static_cast<size_t>(pairs * (S * part_len + (T > 1 ? T * own_len : 0))));
  float* own = parts + pairs * S * part_len;
  const int64_t es = kv_f16 ? 2 : 4;
  // part = attn_part of `heads` query rows at qrows over positions [lo, hi) of key/value head g.
  auto range = [&](float* part, const float* qrows, int64_t heads, int64_t g, int64_t lo, int64_t hi) {
    float* scores = t_scratch_a.get<float>(static_cast<size_t>(heads * (hi - lo) + 16));
    // Position p lives in slot p % capacity; the range wraps at most once (it is <= capacity long).
    const int64_t s0 = lo % capacity, first = std::min(hi - lo, capacity - s0);
    const unsigned char* kh = static_cast<const unsigned char*>(k_cache) + g * capacity * d * es;
    const unsigned char* vh = static_cast<const unsigned char*>(v_cache) + g * capacity * d * es;
    const KvRows kv{kh + s0 * d * es, vh + s0 * d * es, kh, vh, first, kv_f16};
    K.attn_part(part, qrows, kv, hi - lo, d, heads, scale, softcap, scores);
  };
  auto task = [&](int64_t t, int) {
    const int64_t s = t % S, pair = t / S, b = pair / n_kv, g = pair % n_kv;
    const int64_t i0 = b * T, tb = std::min(T, n - i0);
    const int64_t lo_all = first_seen(i0 + tb - 1), hi_all = std::max(lo_all, pos0 + i0 + 1);
    const float* qrows = q + (i0 * n_heads + g * group) * d;
    if (tb > 1) {  // the block's query heads for g, one token after another
      float* qb = t_scratch_b.get<float>(static_cast<size_t>(tb * group * d));
      for (int64_t u = 0; u < tb; ++u)
        std::memcpy(qb + u * group * d, q + ((i0 + u) * n_heads + g * group) * d,
                    static_cast<size_t>(group * d) * sizeof(float));
      qrows = qb;
    }
    const int64_t span = hi_all - lo_all;
    range(parts + t * part_len, qrows, tb * group, g, lo_all + s * span / S, lo_all + (s + 1) * span / S);
    if (T == 1 || s != S - 1) return;
    for (int64_t u = 0; u < tb; ++u) {  // each token's own: [first seen, lo_all) and [hi_all, itself]
      const int64_t i = i0 + u, lo = first_seen(i), hi = pos0 + i + 1;
      float* o = own + (pair * T + u) * own_len;
      const float* qi = q + (i * n_heads + g * group) * d;
      range(o, qi, group, g, lo, std::min(lo_all, hi));
      range(o + group * head_len, qi, group, g, std::max(hi_all, lo), hi);
    }
  };
  const int64_t tasks = pairs * S;
  ThreadPool& pool = ThreadPool::instance();
  if (tasks == 1 || n_heads * n * most * d < 2 * kSerialWork || pool.threads() == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t, 0);
  } else {
    // Contiguous runs of tasks, several per thread for balance (later tokens see more keys), so the
    // shared task counter is not hit once per tiny task.
    const int64_t runs = std::min<int64_t>(tasks, 16 * pool.threads());
    pool.parallel_for(runs, [&](int64_t r, int tid) {
      for (int64_t t = r * tasks / runs; t < (r + 1) * tasks / runs; ++t) task(t, tid);
    });
  }
  // Each head's partials, in order (the S shared ranges, then its token's own two): out =
  // sum_r e^(m_r - M) acc_r / sum_r e^(m_r - M) l_r. Written only now, so out may alias q.
  const int64_t R = S + (T > 1 ? 2 : 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / T, u = i % T;
    for (int64_t g = 0; g < n_kv; ++g) {
      const int64_t pair = b * n_kv + g;
      for (int64_t h = 0; h < group; ++h) {
        auto partial = [&](int64_t r) {
          return r < S ? parts + (pair * S + r) * part_len + (u * group + h) * head_len
                       : own + (pair * T + u) * own_len + (r - S) * group * head_len + h * head_len;
        };
        float M = -INFINITY;
        for (int64_t r = 0; r < R; ++r) M = std::max(M, partial(r)[0]);
        float L = 0.0f;
        float* o = out + (i * n_heads + g * group + h) * d;
        for (int64_t e = 0; e < d; ++e) o[e] = 0.0f;
        for (int64_t r = 0; r < R; ++r) {
          const float* p = partial(r);
          if (p[0] == -INFINITY) continue;  // an empty range
          const float f = std::exp(p[0] - M);  // exactly 1 for the range holding the maximum
          L += f * p[1];
          for (int64_t e = 0; e < d; ++e) o[e] += f * p[2 + e];
        }
        const float inv = 1.0f / L;
        for (int64_t e = 0; e < d; ++e) o[e] *= inv;
      }
    }
  }
}

void cache_write(void* k_cache, void* v_cache, const float* k, const float* v, int64_t n, int64_t n_kv,
                 int64_t head_dim, int64_t pos0, int64_t capacity, bool kv_f16) {
  const size_t bytes = static_cast<size_t>(head_dim) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < n_kv; ++h) {
      const int64_t src = (i * n_kv + h) * head_dim;
      const int64_t dst = (h * capacity + (pos0 + i) % capacity) * head_dim;
      if (kv_f16) {  // a few rows per token: the scalar conversion costs nothing measurable
        uint16_t* kd = static_cast<uint16_t*>(k_cache) + dst;
        uint16_t* vd = static_cast<uint16_t*>(v_cache) + dst;
        for (int64_t e = 0; e < head_dim; ++e) {
          kd[e] = float_to_half(k[src + e]);
          vd[e] = float_to_half(v[src + e]);
        }
      } else {
        std::memcpy(static_cast<float*>(k_cache) + dst, k + src, bytes);
        std::memcpy(static_cast<float*>(v_cache) + dst, v + src, bytes);
      }
    }
  }
}

void softcap(float* x, int64_t count, float cap) {
  parallel_range(count, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      if (x[i] != -INFINITY) x[i] = cap * std::tanh(x[i] / cap);
  });
}

void silu_mul(float* gate, const float* up, int64_t count) {
  const KernelTable& K = active_kernels();
  parallel_range(count, [&](int64_t b, int64_t e) { K.silu_mul(gate + b, up + b, e - b); });
}

void activate(float* x, int64_t count, Activation kind) {
  const KernelTable& K = active_kernels();
  parallel_range(count, [&](int64_t b, int64_t e) { K.activate(x + b, e - b, static_cast<int>(kind)); });
}

void add(float* y, const float* x, int64_t count) {
  const KernelTable& K = active_kernels();
  parallel_range(count, [&](int64_t b, int64_t e) { K.add(y + b, x + b, e - b); });
}

int64_t argmax(const float* x, int64_t n) {
  if (n <= 0 || x[0] != x[0]) return 0;
  // The largest value first, in four 4-wide vectors (GCC vector extensions, so the baseline build
  // vectorizes it; `v > m ? v : m` is maxps: NaN never wins), then the first index holding it.
  typedef float f4 __attribute__((vector_size(16)));
  const f4 x0 = x[0] - f4{};
  f4 m[4] = {x0, x0, x0, x0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int u = 0; u < 4; ++u) {
      f4 v;
      std::memcpy(&v, x + i + 4 * u, sizeof v);
      m[u] = v > m[u] ? v : m[u];
    }
  float best = x[0];
  for (const f4& mu : m)
    for (int j = 0; j < 4; ++j) best = mu[j] > best ? mu[j] : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (i = 0; i < n; ++i)
    if (x[i] == best) return i;
  return 0;
}

void softmax(float* x, int64_t n, int64_t dim) {
  const KernelTable& K = active_kernels();
  parallel_rows(n, dim * 8, [&](int64_t i) { K.softmax_row(x + i * dim, dim); });
}

}  // namespace hire
