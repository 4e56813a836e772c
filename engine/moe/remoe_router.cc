// ReMoE routing (spec deco.md §4.3): ReLU of the logits is both the gate and the weight;
// optionally only the floor(ratio * E) largest stay (router_clamp_act_ratio).
#include <algorithm>
#include <cmath>

#include "engine/moe/router.h"

namespace moeserve {
namespace {

class ReMoERouter final : public Router {
 public:
  explicit ReMoERouter(const RouterSpec& spec) : spec_(spec) {}

 private:
  // Budget: positive weights below min_weight are dropped (after the clamp; the order does
  // not matter, both keep the largest).
  void Route(const float* l, const ExpertBudget& budget, RouterScratch& scratch, Routing& out) const override {
    const int n = spec_.num_experts;
    std::vector<int>& positive = scratch.indices;
    positive.clear();
    for (int e = 0; e < n; ++e) {
      if (l[e] > 0.0f) positive.push_back(e);
    }
    if (spec_.clamp_ratio > 0.0 && spec_.clamp_ratio < 1.0) {
      const size_t keep = static_cast<size_t>(std::floor(spec_.clamp_ratio * n));
      if (positive.size() > keep) {
        // Largest values first, lower id on ties; then back to ascending ids.
        std::partial_sort(positive.begin(), positive.begin() + keep, positive.end(),
                          [&](int a, int b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
        positive.resize(keep);
        std::sort(positive.begin(), positive.end());
      }
    }
    int32_t active = 0;
    for (int e : positive) {
      if (budget.min_weight > 0.0f && l[e] < budget.min_weight) continue;
      out.Add(e, l[e], true);
      ++active;
    }
    out.EndToken(active);
  }

  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeReMoERouter(const RouterSpec& spec) { return std::make_unique<ReMoERouter>(spec); }

}  // namespace moeserve
