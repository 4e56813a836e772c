// Standard process metrics (resident and virtual memory, CPU time, start time, open file
// descriptors) read from /proc at scrape time. prometheus-cpp has no such collector.
#ifndef MOESERVE_SERVER_PROCESS_COLLECTOR_H_
#define MOESERVE_SERVER_PROCESS_COLLECTOR_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <vector>

namespace moeserve {

class ProcessCollector : public prometheus::Collectable {
 public:
  ProcessCollector();
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  double start_time_seconds_;
};

}  // namespace moeserve

#endif  // MOESERVE_SERVER_PROCESS_COLLECTOR_H_
