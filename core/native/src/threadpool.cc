// ThreadPool implementation: generation counter + spin-then-sleep workers (see threadpool.h).
// The spin window keeps workers hot between the back-to-back ops of one token; after it they block
// on a condition variable. Tune kSpinNs if dispatch latency or idle CPU use needs to change.
#include "threadpool.h"

#include <chrono>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace hire {
namespace {

constexpr int64_t kSpinNs = 200000;  // 0.2 ms

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() {
  unsigned hc = std::thread::hardware_concurrency();
  int n = hc == 0 ? 1 : static_cast<int>(hc);
  if (n > 256) n = 256;
  resize(n);
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  stop_.store(true);
  { std::lock_guard<std::mutex> lk(mu_); }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stop_.store(false);
}

void ThreadPool::resize(int n) {
  if (n < 1) n = 1;
  std::lock_guard<std::mutex> run_lk(run_mu_);
  if (n == n_threads_ && static_cast<int>(workers_.size()) == n - 1) return;
  stop_workers();
  n_threads_ = n;
  const uint64_t seen = gen_.load();
  workers_.reserve(n - 1);
  try {
    for (int tid = 1; tid < n; ++tid) workers_.emplace_back([this, tid, seen] { worker_main(tid, seen); });
  } catch (...) {
    n_threads_ = static_cast<int>(workers_.size()) + 1;  // keep what did start
    throw;
  }
}

void ThreadPool::execute(Job* job, int tid) {
  for (;;) {
    const int64_t t = job->next.fetch_add(1, std::memory_order_relaxed);
    if (t >= job->n) break;
    try {
      job->fn(job->ctx, t, tid);
    } catch (...) {
      std::lock_guard<std::mutex> lk(job->err_mu);
      if (!job->err) job->err = std::current_exception();
    }
  }
}

void ThreadPool::worker_main(int tid, uint64_t seen) {
  for (;;) {
    uint64_t g = gen_.load(std::memory_order_acquire);
    if (g == seen && !stop_.load(std::memory_order_relaxed)) {
      const int64_t start = now_ns();
      for (int i = 1;; ++i) {
        cpu_relax();
        g = gen_.load(std::memory_order_acquire);
        if (g != seen || stop_.load(std::memory_order_relaxed)) break;
        if ((i & 63) == 0 && now_ns() - start > kSpinNs) {
          // Sleep. sleepers_ is raised before re-checking gen_ (both seq_cst), and run() reads
          // sleepers_ after bumping gen_, so a wake-up cannot be lost.
          std::unique_lock<std::mutex> lk(mu_);
          sleepers_.fetch_add(1);
          cv_.wait(lk, [&] { return gen_.load() != seen || stop_.load(); });
          sleepers_.fetch_sub(1);
          g = gen_.load(std::memory_order_acquire);
          break;
        }
      }
    }
    if (stop_.load()) return;
    seen = g;
    active_.fetch_add(1);
    if (open_gen_.load() == g) execute(&job_, tid);
    active_.fetch_sub(1);
  }
}

void ThreadPool::run(int64_t n, TaskFn fn, void* ctx) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> run_lk(run_mu_, std::try_to_lock);
  if (!run_lk.owns_lock() || workers_.empty() || n == 1) {
    // Single task, no workers, or the pool is busy (another JS thread): run here.
    Job local;
    local.fn = fn;
    local.ctx = ctx;
    local.n = n;
    execute(&local, 0);
    if (local.err) std::rethrow_exception(local.err);
    return;
  }
  job_.fn = fn;
  job_.ctx = ctx;
  job_.n = n;
  job_.next.store(0, std::memory_order_relaxed);
  job_.err = nullptr;
  const uint64_t g = gen_.load() + 1;
  open_gen_.store(g);
  gen_.store(g);
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lk(mu_); }
    cv_.notify_all();
  }
  execute(&job_, 0);
  // Every task is claimed: close the job, then wait only for workers that joined it.
  open_gen_.store(0);
  for (int i = 0; active_.load() > 0; ++i) {
    if (i < 20000) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  if (job_.err) std::rethrow_exception(job_.err);
}

}  // namespace hire
