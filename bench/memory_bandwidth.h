// Measures the machine's sustained memory read bandwidth with the engine's own thread pool,
// so decode throughput can be reported as a fraction of the roofline in the same run.
#ifndef MOESERVE_BENCH_MEMORY_BANDWIDTH_H_
#define MOESERVE_BENCH_MEMORY_BANDWIDTH_H_

#include <cstdint>

#include "engine/kernels/cpu/thread_pool.h"

namespace moeserve {

// A buffer far above cache sizes, filled once, read in full by the pool's threads on each
// Measure(): the median bytes/second over `passes` reads (after one warm-up read). Kept alive
// across measurements so that a benchmark can pair each timed run with the bandwidth of that
// moment (on a shared VM it drifts by a factor of two within minutes).
class ReadBandwidthProbe {
 public:
  ReadBandwidthProbe(ThreadPool& pool, int64_t bytes);
  ~ReadBandwidthProbe();
  ReadBandwidthProbe(const ReadBandwidthProbe&) = delete;
  ReadBandwidthProbe& operator=(const ReadBandwidthProbe&) = delete;

  double Measure(int passes);

 private:
  ThreadPool& pool_;
  int64_t n_;  // floats
  float* buffer_;
};

}  // namespace moeserve

#endif  // MOESERVE_BENCH_MEMORY_BANDWIDTH_H_
