#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace moeserve {
namespace {

// Index of the largest value, the lowest among equals (the values are finite: the scheduler
// checks). Eight running maxima break the compare chain; a second pass finds the index.
int32_t Argmax(std::span<const float> v) {
  const size_t n = v.size();
  float m[8];
  for (int j = 0; j < 8; ++j) m[j] = v[0];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) m[j] = std::max(m[j], v[i + j]);
  }
  float best = *std::max_element(m, m + 8);
  for (; i < n; ++i) best = std::max(best, v[i]);
  return static_cast<int32_t>(std::find(v.begin(), v.end(), best) - v.begin());
}

}  // namespace

int32_t Sampler::Prepare(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t V = static_cast<int32_t>(logits.size());
  const bool penalise = params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                        params_.frequency_penalty != 0.0f;
  // Greedy without penalties reads the logits in place: this runs once per sequence and step
  // on the serving loop's thread, over the whole vocabulary.
  if (params_.temperature <= 0.0f && !penalise) {
    return Argmax(logits);
  }
  work_.assign(logits.begin(), logits.end());
  if (penalise) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t id : history) {
      if (id >= 0 && id < V) ++counts[id];
    }
    for (const auto& [id, n] : counts) {
      float& l = work_[id];
      if (params_.repetition_penalty != 1.0f)
        l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
      l -= params_.presence_penalty + params_.frequency_penalty * n;
    }
  }
  if (params_.temperature <= 0.0f) {
    return Argmax(work_);
  }
  for (float& l : work_) l /= params_.temperature;
  // Candidates best first (ties by id), truncated by top-k, then top-p, then min-p. order_ is
  // sorted only as far as the truncations look: its first `sorted` entries are the best, in
  // order; a full sort of the vocabulary per token would dominate the step.
  const auto better = [&](int32_t a, int32_t b) { return work_[a] != work_[b] ? work_[a] > work_[b] : a < b; };
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  int32_t sorted = 0;
  const auto sort_prefix = [&](int32_t n) {
    if (n <= sorted) return;
    std::partial_sort(order_.begin() + sorted, order_.begin() + n, order_.end(), better);
    sorted = n;
  };
  int32_t keep = V;
  if (params_.top_k > 0 && params_.top_k < V) {
    keep = params_.top_k;
    sort_prefix(keep);
  }
  const float max_logit = sorted > 0 ? work_[order_[0]] : work_[Argmax(work_)];
  const auto weight = [&](int32_t id) { return std::exp(double{work_[id]} - max_logit); };
  // min-p keeps the tokens whose probability is at least min_p times the top token's: a prefix
  // of the order, as long as the number of logits at or above the floor (at least the top one).
  int32_t min_p_keep = V;
  if (params_.min_p > 0.0f) {
    const double floor_logit = max_logit + std::log(double{params_.min_p});
    min_p_keep = 0;
    for (float l : work_) min_p_keep += l >= floor_logit ? 1 : 0;
    min_p_keep = std::max(min_p_keep, 1);
  }
  if (params_.top_p < 1.0f) {
    double total = 0;  // over the top-k set
    if (keep == V) {
      for (int32_t id = 0; id < V; ++id) total += weight(id);
    } else {
      for (int32_t i = 0; i < keep; ++i) total += weight(order_[i]);
    }
    // The smallest prefix holding top_p of the mass, looked for in growing sorted prefixes;
    // min-p would cut beyond `limit` anyway.
    const int32_t limit = std::min(keep, min_p_keep);
    double cumulative = 0;
    int32_t i = 0, cut = limit;
    for (int32_t chunk = 256; i < limit; chunk *= 8) {
      const int32_t n = std::min<int64_t>(limit, std::max<int64_t>(chunk, sorted));
      sort_prefix(n);
      for (; i < n; ++i) {
        cumulative += weight(order_[i]) / total;
        if (cumulative >= params_.top_p) break;
      }
      if (i < n) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  keep = std::min(keep, min_p_keep);
  // The whole vocabulary kept: no order needed, draw in id order.
  if (keep < V) sort_prefix(keep);
  const auto candidate = [&](int32_t i) { return keep < V ? order_[i] : i; };
  kept_ids_.resize(keep);
  kept_weights_.resize(keep);
  for (int32_t i = 0; i < keep; ++i) {
    kept_ids_[i] = candidate(i);
    kept_weights_[i] = weight(kept_ids_[i]);
  }
  return -1;
}

int32_t Sampler::Draw(int32_t excluded) {
  const size_t n = kept_ids_.size();
  double kept = 0;
  for (size_t i = 0; i < n; ++i) kept += kept_ids_[i] != excluded ? kept_weights_[i] : 0.0;
  std::uniform_real_distribution<double> uniform(0.0, kept);
  const double target = uniform(rng_);
  double acc = 0;
  int32_t chosen = kept_ids_[n - 1] != excluded || n < 2 ? kept_ids_[n - 1] : kept_ids_[n - 2];
  for (size_t i = 0; i < n; ++i) {
    if (kept_ids_[i] == excluded) continue;
    acc += kept_weights_[i];
    if (acc >= target) {
      chosen = kept_ids_[i];
      break;
    }
  }
  return chosen;
}

SampledToken Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t greedy = Prepare(logits, history);
  return {greedy >= 0 ? greedy : Draw(-1)};
}

SampledToken Sampler::SampleAgainstDraft(std::span<const float> logits, std::span<const int32_t> history,
                                         int32_t draft, bool* accepted) {
  const int32_t greedy = Prepare(logits, history);
  if (greedy >= 0) {
    *accepted = greedy == draft;
    return {greedy};
  }
  // The draft came from a lookup, not from a distribution: q is a point mass on it. Accept it
  // with probability min(1, p(d) / q(d)) = p(d); otherwise draw from the residual (p − q)+,
  // which is p without d, renormalised. The token is then distributed exactly as p.
  double total = 0, draft_weight = 0;
  for (size_t i = 0; i < kept_ids_.size(); ++i) {
    total += kept_weights_[i];
    if (kept_ids_[i] == draft) draft_weight = kept_weights_[i];
  }
  if (draft_weight > 0) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    if (unit(rng_) * total < draft_weight) {
      *accepted = true;
      return {draft};
    }
  }
  *accepted = false;
  return {Draw(draft)};
}

}  // namespace moeserve
