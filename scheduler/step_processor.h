// What happens to a planned step around the engine call: the ForwardBatch built from the
// plan, then, from the engine's output, each sequence's progress and MoE totals, sampling,
// logprobs, detokenising and stop matching, and the events its client receives. No lock, no
// thread; the scheduler's loop is its only user.
#ifndef MOESERVE_SCHEDULER_STEP_PROCESSOR_H_
#define MOESERVE_SCHEDULER_STEP_PROCESSOR_H_

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine_info.h"
#include "engine/forward_batch.h"
#include "engine/tokenizer.h"
#include "scheduler/batch_planner.h"
#include "scheduler/scheduler_observer.h"
#include "scheduler/sequence.h"

namespace moeserve {

// What one step did, for the step report and for ending the sequences that finished.
struct StepOutcome {
  int prompt_tokens = 0;     // prompt tokens computed for the first time
  int generated_tokens = 0;  // tokens sampled
  bool any_prefill = false, any_decode = false;
  std::vector<std::pair<uint64_t, TokenEvent>> finished;  // final events, not yet sent
  struct Verification {
    Sequence* seq;
    int drafted, accepted;
  };
  std::vector<Verification> verified;  // speculative chunks, for the planner's block accounting
};

class StepProcessor {
 public:
  // `tokenizer` and `observer` may be null; both must outlive the processor.
  StepProcessor(const EngineInfo& info, const Tokenizer* tokenizer, SchedulerObserver* observer,
                std::string debug_nan_request_prefix);

  // Per MoE layer of the served model, a request's totals at zero.
  std::vector<LayerRouting> NewRoutingTotals() const;

  // The engine's input for `plan`; its spans point into the planned sequences.
  ForwardBatch BuildBatch(const std::vector<PlannedChunk>& plan) const;

  // Advances every planned sequence by its chunk, samples where a chunk completes the known
  // tokens and streams the non-final events. A failed `status` ends every planned sequence
  // with an error. The final events come back in the outcome, for EndSequence.
  StepOutcome Process(const std::vector<PlannedChunk>& plan, const ForwardBatch& batch, const absl::Status& status,
                      ForwardOutput& output);

  // Sends a finished sequence's final event (its finish reason, counts and MoE totals) and
  // reports it. The sequence has already left the planner.
  void EndSequence(Sequence& seq, TokenEvent event);
  // Ends a sequence that did not finish by itself (cancelled, deadline, shutdown).
  void AbortSequence(Sequence& seq, FinishReason reason);

  // The step's figures for the observer, after its finished sequences have left the planner.
  // `before` = the planner's counters when the step was planned.
  StepReport Report(const std::vector<PlannedChunk>& plan, const StepOutcome& outcome, const BatchPlanner& planner,
                    const BatchPlanner::Counters& before, double seconds) const;

 private:
  // The logits row of a sequence, with the NaN fault injection applied; false (and the event
  // ended with an error) when they are not finite.
  bool CheckLogits(Sequence& seq, std::span<float> logits, TokenEvent& event) const;
  void SampleNext(Sequence& seq, float* logits, TokenEvent& event);
  // Speculative chunk: verifies the draft against rows [row, row + draft + 1); returns how many
  // draft tokens were accepted.
  int VerifyDraft(Sequence& seq, ForwardOutput& output, int32_t row, TokenEvent& event);
  // Appends a sampled token to the sequence and the event (logprobs, stops, length); true when
  // it ended the request.
  bool Emit(Sequence& seq, int32_t id, std::span<const float> logits, TokenEvent& event);

  int64_t vocab_size_;
  std::vector<MoeLayerInfo> moe_layers_;
  const Tokenizer* tokenizer_;
  SchedulerObserver* observer_;
  std::string debug_nan_request_prefix_;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_STEP_PROCESSOR_H_
