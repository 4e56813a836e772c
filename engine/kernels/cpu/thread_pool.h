// A fixed pool of worker threads running fork/join parallel loops. The calling thread takes
// part, so a pool of N threads starts N-1 workers. Workers spin briefly before sleeping,
// because decode steps issue hundreds of short loops per token.
//
// With MOESERVE_PIN_THREADS=1 in the environment, each thread is pinned to its own CPU.
//
// Thread-safety: ParallelFor must be called from one thread at a time (the serving loop).
#ifndef MOESERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_
#define MOESERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moeserve {

class ThreadPool {
 public:
  // `num_threads` <= 0 means the number of hardware threads.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Where the pool's time goes outside the work itself, since construction (for benchmarks):
  // parallel regions run, the caller's time waiting at the join for the other threads, and
  // the workers' time spinning between regions before work arrived or they went to sleep.
  struct Stats {
    int64_t regions = 0;
    int64_t join_wait_ns = 0;
    int64_t worker_spin_ns = 0;
  };
  Stats stats() const;

  // Calls fn(begin, end) on disjoint contiguous ranges covering [0, n) and returns when all are
  // done. Threads take chunks as they come free, each a fraction of what is left (guided), so
  // the threads finish close together and a thread the OS preempts (a gRPC thread, the
  // benchmark client on the same cores) delays the join by one chunk, not by half the work.
  // No chunk is smaller than `min_chunk` units (except the last), for loops whose units are
  // too short to be streamed one by one.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

  // As ParallelFor, and also passes the index (< num_threads) of the thread running the range,
  // for per-thread workspaces.
  void ParallelForIndexed(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn, int64_t min_chunk = 1);

 private:
  void WorkerLoop(int index);
  void RunChunks(int index);
  void PinCaller();

  bool pinned_ = false;         // MOESERVE_PIN_THREADS=1
  bool caller_pinned_ = false;  // the calling thread pinned to the first CPU

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int, int64_t, int64_t)>* task_ = nullptr;
  int64_t task_size_ = 0;
  int64_t min_chunk_ = 1;
  std::atomic<int64_t> next_{0};  // the first unit not yet handed out
  std::atomic<int64_t> regions_{0}, join_wait_ns_{0}, worker_spin_ns_{0};
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_BACKEND_CPU_THREAD_POOL_H_
