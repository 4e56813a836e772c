// The serving loop of the continuous-batching scheduler: an inbox that any thread may fill, and
// one thread that, each iteration, takes the inbox's arrivals and aborts, ends expired
// requests, plans a step (BatchPlanner), runs it on the engine and turns the output into events
// (StepProcessor).
//
// Thread-safety: Enqueue, Abort, Drain, AbortAll, Idle and GetStats may be called from any
// thread. RunOnce is for a caller that drives the loop itself (tests) and never calls Start.
#ifndef MOESERVE_SCHEDULER_SCHEDULER_H_
#define MOESERVE_SCHEDULER_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "scheduler/batch_planner.h"
#include "scheduler/request.h"
#include "scheduler/scheduler_observer.h"
#include "scheduler/scheduler_options.h"
#include "scheduler/step_processor.h"

namespace moeserve {

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  uint64_t preemptions = 0;
  uint64_t spec_draft_tokens = 0;     // speculative decoding: draft tokens verified
  uint64_t spec_accepted_tokens = 0;  // and accepted
};

class Scheduler {
 public:
  // `engine`, `tokenizer` (may be null) and `observer` (may be null) must outlive the scheduler.
  // The KV block pool is the engine's cache (EngineInfo::kv).
  Scheduler(Engine* engine, const Tokenizer* tokenizer, const SchedulerOptions& options,
            SchedulerObserver* observer = nullptr);
  ~Scheduler();

  void Start();
  // Ends every request still present with CANCELLED and joins the loop.
  void Stop();

  // Queues a request. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when draining,
  // INVALID_ARGUMENT when it could never fit in the KV cache. Returns the request's handle.
  absl::StatusOr<uint64_t> Enqueue(RequestParams params, std::shared_ptr<RequestSink> sink);
  // Ends the request with `reason` (kCancelled or kDeadline) and frees its blocks at once.
  void Abort(uint64_t handle, FinishReason reason);
  // Refuses new requests from now on; running and waiting ones continue.
  void Drain();
  // Ends every request still present with `reason`.
  void AbortAll(FinishReason reason);
  // True when no request is waiting or running.
  bool Idle() const;

  SchedulerStats GetStats() const;

  // One iteration of the loop: inbox, deadlines, plan, engine step, events.
  void RunOnce();

 private:
  void Loop();
  void TakeInbox();
  void Finish(uint64_t id, FinishReason reason);
  void PublishStats();

  Engine* engine_;
  SchedulerOptions options_;
  SchedulerObserver* observer_;
  int64_t num_blocks_;
  int64_t block_size_;

  // Inbox and admission state, shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Sequence>> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, FinishReason>> aborts_ ABSL_GUARDED_BY(mu_);
  bool abort_all_ ABSL_GUARDED_BY(mu_) = false;
  FinishReason abort_all_reason_ ABSL_GUARDED_BY(mu_) = FinishReason::kCancelled;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int queued_ ABSL_GUARDED_BY(mu_) = 0;  // inbox + waiting, for the queue limit
  const Tokenizer* tokenizer_;

  // Loop-thread state.
  BatchPlanner planner_;
  StepProcessor processor_;
  ForwardOutput output_;
  std::thread thread_;

  // Published figures.
  std::atomic<int> stat_running_{0}, stat_waiting_{0};
  std::atomic<int64_t> stat_free_blocks_{0};
  std::atomic<uint64_t> stat_preemptions_{0};
  std::atomic<uint64_t> stat_spec_drafted_{0}, stat_spec_accepted_{0};
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_H_
