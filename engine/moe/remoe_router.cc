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

  void RouteToken(const float* l, RouterScratch& scratch, Routing& out) const override {
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
    for (int e : positive) out.Add(e, l[e], true);
    out.EndToken(static_cast<int32_t>(positive.size()));
  }

 private:
  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeReMoERouter(const RouterSpec& spec) { return std::make_unique<ReMoERouter>(spec); }

}  // namespace moeserve
