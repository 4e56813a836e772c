#include "engine/moe/route_batch.h"

namespace moeserve {

const Routing& BatchRouter::Route(const Router& router, const float* logits, int num_experts,
                                  std::span<const ExpertBudget> budgets, int layer, bool dense_experts,
                                  EngineObserver* observer, ForwardOutput* out) {
  const int64_t T = static_cast<int64_t>(budgets.size());
  routing.Clear();
  // Worst case: every expert for every token (ties in LapSum, DECO's `normal` norm).
  routing.experts.reserve(T * num_experts);
  routing.weights.reserve(T * num_experts);
  routing.active.reserve(T * num_experts);
  for (int64_t t = 0; t < T; ++t) router.RouteToken(logits + t * num_experts, scratch, routing, budgets[t]);
  for (int64_t t = 0; t < T; ++t) out->active_counts[layer * T + t] = routing.num_active[t];
  if (observer != nullptr) observer->OnRouting(layer, routing);
  if (!dense_experts) return routing;
  ExpandToAllExperts(routing, num_experts, dense_routing);
  return dense_routing;
}

}  // namespace moeserve
