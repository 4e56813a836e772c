#include "scheduler/step_processor.h"

#include <algorithm>
#include <limits>
#include <span>

namespace moeserve {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

StepProcessor::StepProcessor(const EngineInfo& info, const Tokenizer* tokenizer, SchedulerObserver* observer,
                             std::string debug_nan_request_prefix)
    : vocab_size_(info.vocab_size),
      moe_layers_(info.moe_layers),
      tokenizer_(tokenizer),
      observer_(observer),
      debug_nan_request_prefix_(std::move(debug_nan_request_prefix)) {}

std::vector<LayerRouting> StepProcessor::NewRoutingTotals() const {
  std::vector<LayerRouting> totals;
  for (const MoeLayerInfo& l : moe_layers_) totals.push_back({l.layer, l.num_experts, 0, 0});
  return totals;
}

ForwardBatch StepProcessor::BuildBatch(const std::vector<PlannedChunk>& plan) const {
  ForwardBatch batch;
  for (const PlannedChunk& c : plan) {
    Sequence& s = *c.seq;
    if (!s.draft.empty()) {  // the last known token, then the draft, with logits for every row
      s.verify.assign(1, s.tokens.back());
      s.verify.insert(s.verify.end(), s.draft.begin(), s.draft.end());
      batch.chunks.push_back({s.verify, static_cast<int32_t>(s.computed), s.blocks, LogitsMode::kAll, s.params.budget});
      continue;
    }
    const bool samples = s.computed + c.num_tokens == static_cast<int64_t>(s.tokens.size());
    batch.chunks.push_back({std::span<const int32_t>(s.tokens).subspan(s.computed, c.num_tokens),
                            static_cast<int32_t>(s.computed), s.blocks,
                            samples ? LogitsMode::kLast : LogitsMode::kNone, s.params.budget});
  }
  return batch;
}

bool StepProcessor::CheckLogits(Sequence& seq, std::span<float> logits, TokenEvent& event) const {
  if (!debug_nan_request_prefix_.empty() && seq.params.request_id.rfind(debug_nan_request_prefix_, 0) == 0) {
    logits[0] = std::numeric_limits<float>::quiet_NaN();
  }
  if (AllFinite(logits)) return true;
  event.finish = FinishReason::kError;
  event.error = "the model produced non-finite logits for this request";
  return false;
}

bool StepProcessor::Emit(Sequence& seq, int32_t id, std::span<const float> logits, TokenEvent& event) {
  seq.tokens.push_back(id);
  event.token_ids.push_back(id);
  if (seq.params.logprobs_top_n > 0) event.logprobs.push_back(ComputeLogprobs(logits, id, seq.params.logprobs_top_n));
  const auto& stops = seq.params.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
    event.finish = FinishReason::kStopToken;  // the stop token is reported, its text is not
    return true;
  }
  if (tokenizer_ != nullptr) {
    bool stopped = false;
    event.text += seq.stop.Push(seq.detokenizer.Push(id), &stopped);
    if (stopped) {
      event.finish = FinishReason::kStopSequence;
      return true;
    }
  }
  if (seq.generated() >= seq.params.max_new_tokens) {
    event.finish = FinishReason::kLength;
    return true;
  }
  return false;
}

void StepProcessor::SampleNext(Sequence& seq, float* logits_ptr, TokenEvent& event) {
  const std::span<float> logits(logits_ptr, vocab_size_);
  if (!CheckLogits(seq, logits, event)) return;
  Emit(seq, seq.sampler.Sample(logits, seq.tokens).id, logits, event);
}

int StepProcessor::VerifyDraft(Sequence& seq, ForwardOutput& output, int32_t row, TokenEvent& event) {
  const int drafted = static_cast<int>(seq.draft.size());
  int accepted = 0;
  for (int j = 0; j <= drafted; ++j) {
    const std::span<float> logits(output.MutableLogits(row + j), vocab_size_);
    if (!CheckLogits(seq, logits, event)) break;
    bool is_draft = false;
    // Row j predicts the token after draft[j - 1]; past the draft, a token of the step's own.
    const int32_t id = j < drafted ? seq.sampler.SampleAgainstDraft(logits, seq.tokens, seq.draft[j], &is_draft).id
                                   : seq.sampler.Sample(logits, seq.tokens).id;
    accepted += is_draft ? 1 : 0;
    if (Emit(seq, id, logits, event) || !is_draft) break;
  }
  return accepted;
}

StepOutcome StepProcessor::Process(const std::vector<PlannedChunk>& plan, const ForwardBatch& batch,
                                   const absl::Status& status, ForwardOutput& output) {
  StepOutcome outcome;
  int64_t T = 0;
  for (const PlannedChunk& c : plan) {
    const Sequence& s = *c.seq;
    if (s.preemptions == 0 && s.computed < s.prompt_len) {
      outcome.prompt_tokens += static_cast<int>(std::min<int64_t>(c.num_tokens, s.prompt_len - s.computed));
    }
    (c.num_tokens == 1 && s.computed >= s.prompt_len ? outcome.any_decode : outcome.any_prefill) = true;
    T += c.num_tokens;
  }
  int64_t t0 = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    Sequence& s = *plan[i].seq;
    const int64_t n = plan[i].num_tokens;
    if (!status.ok()) {
      TokenEvent event;
      event.finish = FinishReason::kError;
      event.error = std::string(status.message());
      outcome.finished.emplace_back(s.id, std::move(event));
      continue;
    }
    for (LayerRouting& r : s.routing) {
      r.tokens += n;
      for (int64_t t = 0; t < n; ++t) r.activations += output.active_counts[r.layer * T + t0 + t];
    }
    t0 += n;
    const bool speculative = !s.draft.empty();
    s.computed += speculative ? 1 : n;  // a draft's keys and values count once it is accepted
    if (batch.chunks[i].logits == LogitsMode::kNone) continue;
    TokenEvent event;
    if (speculative) {
      const int accepted = VerifyDraft(s, output, output.chunk_logits_begin[i], event);
      s.computed += accepted;
      outcome.verified.push_back({&s, static_cast<int>(s.draft.size()), accepted});
    } else {
      SampleNext(s, output.MutableLogits(output.chunk_logits_begin[i]), event);
    }
    outcome.generated_tokens += static_cast<int>(event.token_ids.size());
    if (!event.token_ids.empty()) {
      const Clock::time_point now = Clock::now();
      if (observer_ && s.generated() == 1) {
        observer_->OnFirstToken(Seconds(now - s.params.arrival), Seconds(s.scheduled_at - s.params.arrival));
      } else if (observer_) {
        observer_->OnInterToken(Seconds(now - s.last_token_at));
      }
      s.last_token_at = now;
    }
    event.prompt_tokens = s.prompt_len;
    event.completion_tokens = s.generated();
    event.queued_at = s.params.arrival;
    event.scheduled_at = s.scheduled_at;
    if (event.finish != FinishReason::kNone) {
      outcome.finished.emplace_back(s.id, std::move(event));
    } else {
      s.sink->OnEvent(std::move(event));
    }
  }
  return outcome;
}

void StepProcessor::EndSequence(Sequence& s, TokenEvent event) {
  event.moe_stats = s.routing;
  if (tokenizer_ != nullptr && event.finish == FinishReason::kLength) {
    bool stopped = false;
    event.text += s.stop.Push(s.detokenizer.Flush(), &stopped) + s.stop.Flush();
  }
  if (observer_) observer_->OnRequestFinished(s.params, event, Seconds(Clock::now() - s.params.arrival));
  s.sink->OnEvent(std::move(event));
}

void StepProcessor::AbortSequence(Sequence& s, FinishReason reason) {
  TokenEvent event;
  event.prompt_tokens = s.prompt_len;
  event.completion_tokens = s.generated();
  event.finish = reason;
  event.moe_stats = s.routing;
  event.queued_at = s.params.arrival;
  event.scheduled_at = s.scheduled_at;
  if (observer_) observer_->OnRequestFinished(s.params, event, Seconds(Clock::now() - s.params.arrival));
  s.sink->OnEvent(std::move(event));
}

StepReport StepProcessor::Report(const std::vector<PlannedChunk>& plan, const StepOutcome& outcome,
                                 const BatchPlanner& planner, const BatchPlanner::Counters& before,
                                 double seconds) const {
  const BatchPlanner::Counters now = planner.counters();
  StepReport report;
  report.phase = outcome.any_prefill && outcome.any_decode ? StepPhase::kMixed
                 : outcome.any_prefill                     ? StepPhase::kPrefill
                                                           : StepPhase::kDecode;
  report.seconds = seconds;
  for (const PlannedChunk& c : plan) report.batch_tokens += static_cast<int>(c.num_tokens);
  report.prompt_tokens = outcome.prompt_tokens;
  report.generated_tokens = outcome.generated_tokens;
  report.running = planner.num_running();
  report.waiting = planner.num_waiting();
  report.kv_usage = planner.blocks().usage_ratio();
  report.preemptions = static_cast<int>(now.preemptions - before.preemptions);
  report.prefix_queried_tokens = now.prefix_queried - before.prefix_queried;
  report.prefix_hit_tokens = now.prefix_hits - before.prefix_hits;
  report.prefix_evictions = now.evictions - before.evictions;
  report.prefix_cached_blocks = planner.blocks().cached_blocks();
  report.spec_draft_tokens = now.drafted - before.drafted;
  report.spec_accepted_tokens = now.accepted - before.accepted;
  return report;
}

}  // namespace moeserve
