// Measures the machine's sustained memory read bandwidth with the engine's own thread pool,
// so decode throughput can be reported as a fraction of the roofline in the same run.
#ifndef MOESERVE_BENCH_MEMORY_BANDWIDTH_H_
#define MOESERVE_BENCH_MEMORY_BANDWIDTH_H_

#include <cstdint>

#include "engine/backend/cpu/thread_pool.h"

namespace moeserve {

// Median bytes/second over `passes` full reads of a `bytes`-sized buffer (far above cache sizes).
double MeasureReadBandwidth(ThreadPool& pool, int64_t bytes, int passes);

}  // namespace moeserve

#endif  // MOESERVE_BENCH_MEMORY_BANDWIDTH_H_
