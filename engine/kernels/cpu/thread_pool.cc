#include "engine/kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moeserve {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin iterations before a worker blocks on the condition variable (~tens of microseconds).
constexpr int kSpinIterations = 20000;

// Guided chunks: each takes 1 / (kGuidedDivisor · threads) of what is left, so they start large
// (few atomic hand-outs) and shrink towards one unit at the end, where the threads' finishing
// times differ by at most the last small chunk; a thread the OS preempts still holds up the
// join by one chunk, never by half the work.
constexpr int kGuidedDivisor = 2;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// MOESERVE_PIN_THREADS=1: thread i of the pool (the caller is 0) runs only on the i-th CPU the
// process may use, so that the OS cannot move two of them onto one core.
bool PinRequested() {
  const char* v = std::getenv("MOESERVE_PIN_THREADS");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

void PinCurrentThread(int index) {
#if defined(__linux__)
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  const int count = CPU_COUNT(&allowed);
  if (count == 0) return;
  int seen = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (seen++ == index % count) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
      return;
    }
  }
#else
  (void)index;
#endif
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads_ = num_threads < 1 ? 1 : num_threads;
  pinned_ = PinRequested() && num_threads_ > 1;
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

void ThreadPool::PinCaller() {
  // The caller takes part in every region as thread 0; it is pinned on its first region (the
  // pool may be built on another thread than the one that runs it).
  if (pinned_ && !caller_pinned_) {
    PinCurrentThread(0);
    caller_pinned_ = true;
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(int index) {
  const int64_t n = task_size_, divisor = int64_t{kGuidedDivisor} * num_threads_, min_chunk = min_chunk_;
  int64_t begin = next_.load(std::memory_order_relaxed), end = 0;
  while (true) {
    do {
      if (begin >= n) return;
      end = std::min(n, begin + std::max(min_chunk, (n - begin) / divisor));
    } while (!next_.compare_exchange_weak(begin, end, std::memory_order_relaxed));
    (*task_)(index, begin, end);
    begin = next_.load(std::memory_order_relaxed);
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  ParallelForIndexed(n, [&fn](int, int64_t begin, int64_t end) { fn(begin, end); }, min_chunk);
}

void ThreadPool::ParallelForIndexed(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn,
                                    int64_t min_chunk) {
  if (n <= 0) return;
  PinCaller();
  min_chunk = std::max<int64_t>(1, min_chunk);
  if (num_threads_ == 1 || n <= min_chunk) {  // one chunk: run inline, no region
    fn(0, 0, n);
    return;
  }
  task_ = &fn;
  task_size_ = n;
  min_chunk_ = min_chunk;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  RunChunks(0);
  const int64_t wait_start = NowNs();
  while (pending_.load(std::memory_order_acquire) != 0) CpuRelax();
  join_wait_ns_.fetch_add(NowNs() - wait_start, std::memory_order_relaxed);
  regions_.fetch_add(1, std::memory_order_relaxed);
  task_ = nullptr;
}

ThreadPool::Stats ThreadPool::stats() const {
  return Stats{regions_.load(), join_wait_ns_.load(), worker_spin_ns_.load()};
}

void ThreadPool::WorkerLoop(int index) {
  if (pinned_) PinCurrentThread(index);
  uint64_t seen = 0;
  while (true) {
    int spins = 0;
    const int64_t spin_start = NowNs();
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      CpuRelax();
      ++spins;
    }
    worker_spin_ns_.fetch_add(NowNs() - spin_start, std::memory_order_relaxed);
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    RunChunks(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace moeserve
