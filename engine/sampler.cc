#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace moeserve {

SampledToken Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t V = static_cast<int32_t>(logits.size());
  work_.assign(logits.begin(), logits.end());
  const bool penalise = params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                        params_.frequency_penalty != 0.0f;
  if (penalise) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t id : history) {
      if (id >= 0 && id < V) ++counts[id];
    }
    for (const auto& [id, n] : counts) {
      float& l = work_[id];
      if (params_.repetition_penalty != 1.0f) l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
      l -= params_.presence_penalty + params_.frequency_penalty * n;
    }
  }
  if (params_.temperature <= 0.0f) {
    const int32_t best = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    double sum = 0;
    for (float l : work_) sum += std::exp(double{l} - work_[best]);
    return {best, static_cast<float>(-std::log(sum))};
  }
  for (float& l : work_) l /= params_.temperature;
  // Candidates sorted by logit, descending; truncated by top-k, then top-p, then min-p.
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t keep = V;
  if (params_.top_k > 0 && params_.top_k < V) keep = params_.top_k;
  std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                    [&](int32_t a, int32_t b) { return work_[a] != work_[b] ? work_[a] > work_[b] : a < b; });
  const float max_logit = work_[order_[0]];
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) total += std::exp(double{work_[order_[i]]} - max_logit);
  if (params_.top_p < 1.0f) {
    double cumulative = 0;
    for (int32_t i = 0; i < keep; ++i) {
      cumulative += std::exp(double{work_[order_[i]]} - max_logit) / total;
      if (cumulative >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    // Keep tokens whose probability is at least min_p times the top token's.
    const double floor_logit = max_logit + std::log(double{params_.min_p});
    int32_t i = 1;
    while (i < keep && work_[order_[i]] >= floor_logit) ++i;
    keep = i;
  }
  double kept = 0;
  for (int32_t i = 0; i < keep; ++i) kept += std::exp(double{work_[order_[i]]} - max_logit);
  std::uniform_real_distribution<double> uniform(0.0, kept);
  const double target = uniform(rng_);
  double acc = 0;
  int32_t chosen = order_[keep - 1];
  for (int32_t i = 0; i < keep; ++i) {
    acc += std::exp(double{work_[order_[i]]} - max_logit);
    if (acc >= target) {
      chosen = order_[i];
      break;
    }
  }
  return {chosen, static_cast<float>(double{work_[chosen]} - max_logit - std::log(kept))};
}

}  // namespace moeserve
