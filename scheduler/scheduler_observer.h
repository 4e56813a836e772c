// What the serving loop reports for metrics. The scheduler knows nothing of Prometheus; the
// server implements this interface. Called on the loop thread; must be cheap.
#ifndef MOESERVE_SCHEDULER_SCHEDULER_OBSERVER_H_
#define MOESERVE_SCHEDULER_SCHEDULER_OBSERVER_H_

#include <cstdint>

#include "scheduler/request.h"

namespace moeserve {

enum class StepPhase { kPrefill, kDecode, kMixed };

struct StepReport {
  StepPhase phase = StepPhase::kDecode;
  double seconds = 0;
  int batch_tokens = 0;
  int prompt_tokens = 0;      // prompt tokens computed this step (first computation only)
  int generated_tokens = 0;   // tokens sampled this step
  int running = 0;
  int waiting = 0;
  double kv_usage = 0;
  int preemptions = 0;        // in this step
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStep(const StepReport& report) {}
  // A request ended; `event` is its final event (finish reason, counts, MoE stats).
  virtual void OnRequestFinished(const RequestParams& params, const TokenEvent& event) {}
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_OBSERVER_H_
