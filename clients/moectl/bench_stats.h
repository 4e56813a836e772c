// Summary statistics of moectl bench (numpy's default percentile: linear interpolation between
// the closest ranks, as vLLM's benchmark reports them).
#ifndef MOESERVE_CLIENTS_MOECTL_BENCH_STATS_H_
#define MOESERVE_CLIENTS_MOECTL_BENCH_STATS_H_

#include <cstddef>
#include <vector>

namespace moeserve::moectl {

struct Distribution {
  size_t count = 0;  // the other fields are meaningless when 0
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// p in [0, 100] of values sorted ascending (not empty).
double Percentile(const std::vector<double>& sorted, double p);

Distribution Summarise(std::vector<double> values);

}  // namespace moeserve::moectl

#endif  // MOESERVE_CLIENTS_MOECTL_BENCH_STATS_H_
