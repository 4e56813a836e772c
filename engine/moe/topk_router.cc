// DeepSeek-style top-k routing (spec deco.md §4.2): exactly k experts per token, chosen by the
// (biased) selection score; weights from the unbiased scores.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/moe/router.h"

namespace moeserve {
namespace {

void SoftmaxInto(const float* l, int n, float* p) {
  float m = -INFINITY;
  for (int e = 0; e < n; ++e) m = std::max(m, l[e]);
  double sum = 0;
  for (int e = 0; e < n; ++e) sum += p[e] = std::exp(l[e] - m);
  for (int e = 0; e < n; ++e) p[e] = static_cast<float>(p[e] / sum);
}

class TopKRouter final : public Router {
 public:
  explicit TopKRouter(const RouterSpec& spec) : spec_(spec) {}

 private:
  // Budget: k becomes min(k, max_experts); selection and weights are those of a top-k router
  // with that k.
  void Route(const float* l, const ExpertBudget& budget, RouterScratch& scratch, Routing& out) const override {
    const int n = spec_.num_experts;
    const int k = budget.max_experts > 0 ? std::min(spec_.topk, budget.max_experts) : spec_.topk;
    scratch.values.resize(3 * n);
    float* score = scratch.values.data();
    float* select = score + n;
    float* weights = score + 2 * n;
    const bool softmax = spec_.score_function == ScoreFunction::kSoftmax;
    if (!softmax) {
      for (int e = 0; e < n; ++e) score[e] = 1.0f / (1.0f + std::exp(-l[e]));
    } else if (spec_.pre_softmax) {
      SoftmaxInto(l, n, score);
    } else {
      std::copy(l, l + n, score);  // post-softmax: select on raw logits
    }
    float bias_scale = 1.0f;
    if (!spec_.expert_bias.empty() && spec_.bias_apply == BiasApply::kRms) {
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += double{score[e]} * score[e];
      bias_scale = static_cast<float>(std::sqrt(sq / n));
    }
    for (int e = 0; e < n; ++e) {
      select[e] = score[e] + (spec_.expert_bias.empty() ? 0.0f : spec_.expert_bias[e] * bias_scale);
    }
    // Top-k by selection score; ties go to the lower expert id. Reported in ascending id order.
    std::vector<int>& order = scratch.indices;
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
      return select[a] != select[b] ? select[a] > select[b] : a < b;
    });
    std::sort(order.begin(), order.begin() + k);

    if (softmax && !spec_.pre_softmax) {
      float m = -INFINITY;
      for (int i = 0; i < k; ++i) m = std::max(m, score[order[i]]);
      double sum = 0;
      for (int i = 0; i < k; ++i) sum += weights[i] = std::exp(score[order[i]] - m);
      for (int i = 0; i < k; ++i) weights[i] = static_cast<float>(weights[i] / sum);
    } else {
      double sum = 0;
      for (int i = 0; i < k; ++i) sum += weights[i] = score[order[i]];
      if (k > 1) {
        for (int i = 0; i < k; ++i) weights[i] = static_cast<float>(weights[i] / (sum + 1e-20));
      }
    }
    const float scale = static_cast<float>(spec_.scaling_factor.value_or(1.0));
    for (int i = 0; i < k; ++i) out.Add(order[i], weights[i] * scale, true);
    out.EndToken(k);
  }

  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeTopKRouter(const RouterSpec& spec) { return std::make_unique<TopKRouter>(spec); }

}  // namespace moeserve
