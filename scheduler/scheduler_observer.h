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
  // Prefix cache: prompt tokens looked up and found at first admission in this step, cached
  // blocks evicted in this step, and the cached blocks now.
  uint64_t prefix_queried_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  uint64_t prefix_evictions = 0;
  int64_t prefix_cached_blocks = 0;
  // Speculative decoding: draft tokens verified in this step, and how many were accepted.
  uint64_t spec_draft_tokens = 0;
  uint64_t spec_accepted_tokens = 0;
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStep(const StepReport& report) {}
  // Queue state, after every loop iteration (also when no step ran, e.g. after an abort).
  virtual void OnState(int running, int waiting, double kv_usage) {}
  // A request's first token: time from arrival (TTFT) and time spent waiting to be scheduled.
  virtual void OnFirstToken(double ttft_seconds, double queue_seconds) {}
  // Gap between two consecutive tokens of one request (ITL).
  virtual void OnInterToken(double seconds) {}
  // A request ended; `event` is its final event (finish reason, counts, MoE stats).
  virtual void OnRequestFinished(const RequestParams& params, const TokenEvent& event, double e2e_seconds) {}
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_OBSERVER_H_
