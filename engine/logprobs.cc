#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moeserve {

TokenLogprobs ComputeLogprobs(std::span<const float> logits, int32_t chosen, int top_n) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double{l} - max_logit);
  const double log_z = max_logit + std::log(sum);
  TokenLogprobs out;
  out.token_id = chosen;
  out.logprob = static_cast<float>(logits[chosen] - log_z);
  const int n = std::min<int>(top_n, static_cast<int>(logits.size()));
  if (n > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (int i = 0; i < n; ++i) out.top.emplace_back(ids[i], static_cast<float>(logits[ids[i]] - log_z));
  }
  return out;
}

bool AllFinite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace moeserve
