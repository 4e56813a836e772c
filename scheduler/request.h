// A generation request as the scheduler sees it: validated parameters in, events out.
#ifndef MOESERVE_SCHEDULER_REQUEST_H_
#define MOESERVE_SCHEDULER_REQUEST_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/expert_budget.h"
#include "engine/logprobs.h"
#include "engine/sampler.h"

namespace moeserve {

using Clock = std::chrono::steady_clock;

enum class FinishReason { kNone, kLength, kStopToken, kStopSequence, kCancelled, kDeadline, kError };

const char* FinishReasonName(FinishReason r);

// Everything needed to run a request; built and validated by the server.
struct RequestParams {
  std::string request_id;
  std::vector<int32_t> prompt;
  int32_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;  // includes the model's EOS ids unless ignore_eos
  int logprobs_top_n = 0;                // 0 = no logprobs
  int priority = 0;                      // higher first
  ExpertBudget budget;                   // serve-time expert budget (default: exact)
  bool prefix_cache = true;              // may reuse (and publish) cached KV blocks of its prefix
  int max_draft_tokens = -1;             // speculative decoding; -1 = the server's default, 0 = off
  std::optional<Clock::time_point> deadline;
  Clock::time_point arrival = Clock::now();
};

// Per MoE layer totals of one request.
struct LayerRouting {
  int layer = 0;
  int num_experts = 0;
  uint64_t tokens = 0;
  uint64_t activations = 0;
};

// What the scheduler reports to the request's owner. Events of one request arrive in order.
struct TokenEvent {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<TokenLogprobs> logprobs;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  FinishReason finish = FinishReason::kNone;  // kNone = more to come
  std::string error;
  std::vector<LayerRouting> moe_stats;        // with the final event
  // Timestamps for latency metrics.
  Clock::time_point queued_at, scheduled_at;
};

// Receives a request's events. Called on the serving-loop thread; must not block.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void OnEvent(TokenEvent event) = 0;
};

}  // namespace moeserve

#endif  // MOESERVE_SCHEDULER_REQUEST_H_
