// Log-probabilities of the model's raw next-token distribution (log-softmax of the logits,
// before penalties, temperature or truncation: what the model itself assigns).
#ifndef MOESERVE_ENGINE_LOGPROBS_H_
#define MOESERVE_ENGINE_LOGPROBS_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace moeserve {

struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // best first
};

TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t chosen, int top_n);

// True when every value is finite (a NaN/Inf row must fail its request, not the batch).
bool AllFinite(std::span<const float> values);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_LOGPROBS_H_
