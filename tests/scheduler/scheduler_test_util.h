// Helpers for driving a Scheduler over a FakeEngine one iteration at a time.
#ifndef MOESERVE_TESTS_SCHEDULER_SCHEDULER_TEST_UTIL_H_
#define MOESERVE_TESTS_SCHEDULER_SCHEDULER_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "scheduler/request.h"

namespace moeserve::testing {

// Keeps every event of one request.
class RecordingSink final : public RequestSink {
 public:
  void OnEvent(TokenEvent event) override { events.push_back(std::move(event)); }

  bool finished() const { return !events.empty() && events.back().finish != FinishReason::kNone; }
  FinishReason finish() const { return finished() ? events.back().finish : FinishReason::kNone; }
  int final_events() const {
    int n = 0;
    for (const TokenEvent& e : events) n += e.finish != FinishReason::kNone;
    return n;
  }
  std::vector<int32_t> tokens() const {
    std::vector<int32_t> ids;
    for (const TokenEvent& e : events) ids.insert(ids.end(), e.token_ids.begin(), e.token_ids.end());
    return ids;
  }

  std::vector<TokenEvent> events;
};

// A greedy request: `prompt_len` tokens counting up from `first`, then `max_new` tokens.
inline RequestParams Request(int32_t first, int prompt_len, int max_new, int priority = 0) {
  RequestParams p;
  p.prompt.resize(prompt_len);
  std::iota(p.prompt.begin(), p.prompt.end(), first);
  p.max_new_tokens = max_new;
  p.priority = priority;
  return p;
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_SCHEDULER_SCHEDULER_TEST_UTIL_H_
