// read_bandwidth: the machine's streaming read rate, to compare kernels against. The buffer is
// allocated and touched once per size and kept; every rep each pool thread sums its own slice with
// the active path's read_sum. Best of reps, in GB/s (1e9 bytes per second).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

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

}  // namespace

double read_bandwidth(size_t bytes, int reps) {
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
  ThreadPool& pool = ThreadPool::instance();
  const size_t n_floats = bytes / sizeof(float);
  const int64_t parts = pool.threads();
  // Slices of whole 4 KiB pages keep every slice 64-byte aligned.
  const size_t per = ((n_floats + parts - 1) / parts + 1023) & ~size_t{1023};
  const float* base = static_cast<const float*>(g_buf);
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0.0f;
    float partial[256] = {};
    pool.parallel_for(parts, [&](int64_t t, int) {
      const size_t b = static_cast<size_t>(t) * per;
      if (b >= n_floats) return;
      const size_t e = b + per < n_floats ? b + per : n_floats;
      partial[t] = K.read_sum(base + b, e - b);
    });
    for (int64_t t = 0; t < parts; ++t) total += partial[t];
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    g_sink = total;
    if (s > 0) best = std::max(best, static_cast<double>(bytes) / s / 1e9);
  }
  return best;
}

}  // namespace hire
