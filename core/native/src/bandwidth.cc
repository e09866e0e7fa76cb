// read_bandwidth: the machine's streaming read rate, to compare kernels against. The buffer is
// allocated and touched once per size and kept; every rep each pool thread sums its own slice with
// the active path's read_sum. Best of reps, in GB/s (1e9 bytes per second).
// With chunk > 0 it measures what HiRE's exact step does instead: one chunk in five (a fixed
// pseudo-random pick, ascending, like k' = 20 % of a layer's neurons) read whole by the gathered-row
// kernel. On DRAM, scattered 4-8 KiB reads cost more per byte than one stream; this rate is the
// ceiling for the gathered part of a sparse token.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "kernel_table.h"
#include "kernels.h"
#include "threadpool.h"

namespace hire {
namespace {

std::mutex g_mu;
void* g_buf = nullptr;
size_t g_bytes = 0;
volatile float g_sink = 0.0f;

// Best of `reps` runs of slice(t) for t < parts on the pool, as GB/s of `bytes_read`.
template <class F>
double best_rate(int reps, int64_t parts, size_t bytes_read, F&& slice) {
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float partial[256] = {};
    ThreadPool::instance().parallel_for(parts, [&](int64_t t, int) { partial[t] = slice(t); });
    float total = 0.0f;
    for (int64_t t = 0; t < parts; ++t) total += partial[t];
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g_sink = total;  // keeps the sums (and so the reads) alive
    if (s > 0) best = std::max(best, static_cast<double>(bytes_read) / s / 1e9);
  }
  return best;
}

}  // namespace

double read_bandwidth(size_t bytes, int reps, size_t chunk) {
  std::lock_guard<std::mutex> lk(g_mu);
  bytes &= ~size_t{4095};
  if (bytes == 0) bytes = 4096;
  if (g_buf == nullptr || g_bytes != bytes) {
    if (g_buf != nullptr) ::munmap(g_buf, g_bytes);
    g_buf = nullptr;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    std::memset(p, 1, bytes);  // touch every page now, not inside the timed loop
    g_buf = p;
    g_bytes = bytes;
  }
  const KernelTable& K = active_kernels();
  const int64_t parts = ThreadPool::instance().threads();
  const unsigned char* base = static_cast<const unsigned char*>(g_buf);
  if (chunk == 0) {
    // Streaming: each thread sums one slice of whole 4 KiB pages (so every slice is 64-byte aligned).
    const size_t n_floats = bytes / sizeof(float);
    const size_t per = ((n_floats + parts - 1) / parts + 1023) & ~size_t{1023};
    return best_rate(reps, parts, bytes, [&](int64_t t) {
      const size_t b = static_cast<size_t>(t) * per;
      if (b >= n_floats) return 0.0f;
      return K.read_sum(reinterpret_cast<const float*>(base) + b, std::min(per, n_floats - b));
    });
  }
  // Gathered: each picked piece read by the kernel that reads HiRE's candidates (gemv_rows, x = 0) as
  // two bf16 rows of chunk / 2 bytes, the way a gated FFN's candidate is its adjacent gate and up rows.
  // So this is the rate of that kernel's reads, not of a plain loop.
  chunk = std::max<size_t>(128, chunk & ~size_t{127});
  std::vector<int32_t> picked;
  for (size_t c = 0, n = bytes / chunk; c < n; ++c)
    if ((c * 2654435761u >> 7) % 5 == 0) {  // Knuth hash: ~1 in 5
      picked.push_back(static_cast<int32_t>(2 * c));
      picked.push_back(static_cast<int32_t>(2 * c + 1));
    }
  if (picked.empty()) return 0.0;
  const int64_t cols = static_cast<int64_t>(chunk / 4);  // bf16 values in half a piece
  const Mat rows{g_buf, kBF16, static_cast<int64_t>(bytes / chunk) * 2, cols, false};
  const std::vector<float> x(static_cast<size_t>(cols), 0.0f);
  std::vector<float> y(picked.size());
  const size_t scratch_len = static_cast<size_t>(cols) + 16;  // gemv_rows' x layout, one per thread
  std::vector<float> scratch(scratch_len * static_cast<size_t>(parts));
  const int64_t pieces = static_cast<int64_t>(picked.size() / 2);
  return best_rate(reps, parts, static_cast<size_t>(pieces) * chunk, [&](int64_t t) {
    const int64_t b = 2 * (pieces * t / parts), e = 2 * (pieces * (t + 1) / parts);
    K.gemv_rows(rows, x.data(), picked.data(), b, e, y.data(), scratch.data() + scratch_len * static_cast<size_t>(t));
    return b < e ? y[static_cast<size_t>(b)] : 0.0f;
  });
}

}  // namespace hire
