// Persistent worker pool: parallel_for(n, fn(task, tid)) hands tasks out dynamically to the workers
// and to the calling thread (tid 0). Workers spin briefly after a job, then sleep on a condition
// variable, so an idle process uses no CPU. Ops call ThreadPool::instance().parallel_for; nothing
// else is needed to parallelise a new kernel.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace hire {

class ThreadPool {
 public:
  static ThreadPool& instance();
  ~ThreadPool();

  // Threads that run a job, the caller included.
  int threads() const { return n_threads_; }
  // 1 = calling thread only. Waits for a running job.
  void resize(int n);

  // Runs fn(task, tid) for task in [0, n), tid in [0, threads()). Returns when all are done and
  // rethrows the first exception a task threw. Nested or concurrent calls run serially.
  template <class F>
  void parallel_for(int64_t n, F&& fn) {
    using Fn = typename std::remove_reference<F>::type;
    run(n, [](void* ctx, int64_t task, int tid) { (*static_cast<Fn*>(ctx))(task, tid); }, &fn);
  }

 private:
  using TaskFn = void (*)(void*, int64_t, int);
  struct Job {
    TaskFn fn;
    void* ctx;
    int64_t n;
    std::atomic<int64_t> next{0};
    std::mutex err_mu;
    std::exception_ptr err;
  };

  ThreadPool();
  void run(int64_t n, TaskFn fn, void* ctx);
  static void execute(Job* job, int tid);
  void worker_main(int tid, uint64_t seen);
  void stop_workers();

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one job at a time (JS worker_threads may share this pool)
  std::mutex mu_;      // guards sleeping
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  // The current job lives in the pool (not on the caller's stack), so a worker that wakes late
  // can look at it safely. Workers join only while open_gen_ names the job they woke for; the
  // caller closes it once every task is claimed and waits only for workers that joined. A worker
  // descheduled by another process therefore never stalls a token: the caller takes its tasks.
  Job job_;
  std::atomic<uint64_t> open_gen_{0};
  std::atomic<int> active_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace hire
