// TopP routing (spec deco.md §4.4): normalised |logit| scores; the shortest prefix (by
// descending score) whose cumulative score exceeds p is active, minus zero scores. Weights
// are the scores themselves, not renormalised over the active set.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/moe/router.h"

namespace moeserve {
namespace {

class TopPRouter final : public Router {
 public:
  explicit TopPRouter(const RouterSpec& spec) : spec_(spec) {}

 private:
  // Budget: at most max_experts of the prefix, largest scores first; weights unchanged.
  void Route(const float* l, const ExpertBudget& budget, RouterScratch& scratch, Routing& out) const override {
    const int n = spec_.num_experts;
    scratch.values.resize(n);
    float* q = scratch.values.data();
    double total = 0;
    for (int e = 0; e < n; ++e) total += std::fabs(l[e]);
    for (int e = 0; e < n; ++e) q[e] = static_cast<float>(std::fabs(l[e]) / (total + 1e-20));
    std::vector<int>& order = scratch.indices;
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return q[a] > q[b]; });
    // Expert at rank j is in the prefix iff the mass before it has not yet exceeded p.
    double before = 0;
    size_t count = 0;
    for (int e : order) {
      if (before > spec_.topp) break;
      before += q[e];
      if (q[e] > 0.0f) order[count++] = e;
    }
    if (budget.max_experts > 0) count = std::min(count, static_cast<size_t>(budget.max_experts));
    std::sort(order.begin(), order.begin() + count);
    for (size_t i = 0; i < count; ++i) out.Add(order[i], q[order[i]], true);
    out.EndToken(static_cast<int32_t>(count));
  }

  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeTopPRouter(const RouterSpec& spec) { return std::make_unique<TopPRouter>(spec); }

}  // namespace moeserve
