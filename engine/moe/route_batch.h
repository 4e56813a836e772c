// Routing one MoE layer for a whole batch, shared by the backends: every token through the
// layer's reference Router (with its own expert budget), its |A| written to the step's
// active_counts, the observer told, and the evaluated set widened to every expert under
// --dense-experts. The CPU routes on the host; so does CUDA where it has no device router.
#ifndef MOESERVE_ENGINE_MOE_ROUTE_BATCH_H_
#define MOESERVE_ENGINE_MOE_ROUTE_BATCH_H_

#include <cstdint>
#include <span>

#include "engine/engine_observer.h"
#include "engine/expert_budget.h"
#include "engine/forward_batch.h"
#include "engine/moe/router.h"
#include "engine/moe/routing.h"

namespace moeserve {

struct BatchRouter {
  Routing routing, dense_routing;
  RouterScratch scratch;

  // Routes T = budgets.size() tokens from their fp32 logits [T, E]; returns the routing the
  // experts evaluate (`routing`, or every expert when `dense_experts`).
  const Routing& Route(const Router& router, const float* logits, int num_experts,
                       std::span<const ExpertBudget> budgets, int layer, bool dense_experts,
                       EngineObserver* observer, ForwardOutput* out);
};

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_ROUTE_BATCH_H_
