// Continuous-batching scheduler and its serving loop (one thread).
//
// Each iteration: take new requests and aborts from the inbox, end expired ones, plan a step
// (decodes first, then chunked prefills of running and newly admitted sequences within
// `max_batch_tokens`, allocating KV blocks and preempting by recompute when they run out),
// run one engine forward, then sample, detokenize, match stops and emit events.
//
// Thread-safety: Enqueue, Abort, Drain and GetStats may be called from any thread.
#ifndef MOESERVE_SCHEDULER_SCHEDULER_H_
#define MOESERVE_SCHEDULER_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "scheduler/block_allocator.h"
#include "scheduler/request.h"
#include "scheduler/scheduler_observer.h"
#include "scheduler/sequence.h"

namespace moeserve {

struct SchedulerOptions {
  int max_running = 64;          // sequences holding KV blocks at once
  int max_batch_tokens = 512;    // tokens per engine step (decodes + prefill chunks)
  int prefill_chunk = 256;       // largest prefill piece of one sequence in one step
  int max_waiting = 256;         // queue limit; beyond it Enqueue is RESOURCE_EXHAUSTED
  // Fault injection, for tests and drills only: a pause after every step (makes timing-based
  // behaviour such as deadlines and draining observable on a fast model), and NaN logits for
  // every request whose request_id starts with this prefix (a model fault in one sequence).
  int debug_step_delay_ms = 0;
  std::string debug_nan_request_prefix;
};

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  uint64_t preemptions = 0;
};

class Scheduler {
 public:
  // `engine` and `tokenizer` (may be null) must outlive the scheduler. The KV block pool is
  // the engine's cache.
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

 private:
  struct PlannedChunk {
    Sequence* seq;
    int64_t num_tokens;
  };

  void Loop();
  void TakeInbox();
  void ExpireDeadlines();
  std::vector<PlannedChunk> Plan();
  bool EnsureBlocks(Sequence& seq, int64_t num_tokens);
  void Preempt(Sequence& victim);
  void RunStep(const std::vector<PlannedChunk>& plan, int preemptions);
  void SampleNext(Sequence& seq, float* logits, TokenEvent& event);
  void Finish(uint64_t id, FinishReason reason, std::string error = "");
  void InsertWaiting(std::unique_ptr<Sequence> seq);
  void PublishStats();
  std::vector<LayerRouting> NewRoutingTotals() const;

  Engine* engine_;
  const Tokenizer* tokenizer_;
  SchedulerOptions options_;
  SchedulerObserver* observer_;
  BlockAllocator blocks_;
  int block_size_;

  // Inbox, shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<std::pair<uint64_t, FinishReason>> aborts_;
  bool abort_all_ = false;
  FinishReason abort_all_reason_ = FinishReason::kCancelled;
  bool stop_ = false;
  bool draining_ = false;
  uint64_t next_id_ = 1;
  int queued_ = 0;  // inbox + waiting, for the queue limit

  // Loop-thread state.
  std::deque<std::unique_ptr<Sequence>> waiting_;   // in precedence order
  std::vector<std::unique_ptr<Sequence>> running_;  // in precedence order
  ForwardOutput output_;
  std::thread thread_;

  // Published figures.
  std::atomic<int> stat_running_{0}, stat_waiting_{0};
  std::atomic<int64_t> stat_free_blocks_{0};
  std::atomic<uint64_t> stat_preemptions_{0};
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_SCHEDULER_H_
