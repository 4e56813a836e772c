// A per-token limit on the routed experts, set per server and per request and carried per
// sequence chunk in ForwardBatch. The default is exact: the model's own routing, bit for bit.
// Every knob applies per token inside the routers, so a token's result never depends on what
// else is in the batch; the realised active count is what Routing::num_active (and therefore
// ForwardOutput::active_counts, metrics and MoeStats) report.
//
// Which knob acts on which router (a knob that does not apply to the model's router is
// ignored):
//   min_weight   DECO/BlockFFN and ReMoE: an expert whose combination weight w satisfies
//                |w| < min_weight is dropped (not evaluated, not counted active). DECO weights
//                g_e = r_e·w_e may be negative; the magnitude decides, because it is the size
//                of the expert's contribution. With DECO's `normal` router norm every expert
//                is evaluated; entries (active or not) with |g| < min_weight are skipped.
//   k_scale      SoftMoE (LapSum): every layer's target k_l becomes k_l·k_scale, clamped to
//                the operator's domain [1e-6, n − 1e-6]; cap = min(⌈γ·k⌉, n) and θ0 = c·k/n
//                are recomputed for the scaled k (spec softmoe.md §3).
//   max_experts  top-k: k becomes min(k, max_experts) (selection and weights as a top-k
//                router with that k); TopP: at most max_experts of the prefix, largest first,
//                weights unchanged (not renormalised).
#ifndef MOESERVE_ENGINE_EXPERT_BUDGET_H_
#define MOESERVE_ENGINE_EXPERT_BUDGET_H_

#include <cmath>

namespace moeserve {

struct ExpertBudget {
  float min_weight = 0.0f;  // 0 = off; must be finite and >= 0
  float k_scale = 1.0f;     // 1 = exact; must be finite and > 0
  int max_experts = 0;      // 0 = off; must be >= 0

  bool IsExact() const { return min_weight == 0.0f && k_scale == 1.0f && max_experts == 0; }
  // nullptr when valid, else what is wrong (names the field).
  const char* Invalid() const {
    if (!std::isfinite(min_weight) || min_weight < 0.0f) return "min_weight must be finite and >= 0";
    if (!std::isfinite(k_scale) || !(k_scale > 0.0f)) return "k_scale must be finite and > 0";
    if (max_experts < 0) return "max_experts must be >= 0";
    return nullptr;
  }
};

// The one rule by which a request's budget overrides the server's default, for every front
// end (gRPC expert_budget, HTTP moe.expert_budget): each knob the request sets replaces the
// default's, and a knob left at 0 means "unset" and keeps the default (k_scale 0 is not a
// valid scale, so 0 is free to mean unset there too). Values are validated by the caller.
inline ExpertBudget OverrideExpertBudget(ExpertBudget base, float min_weight, float k_scale, int max_experts) {
  if (min_weight > 0.0f) base.min_weight = min_weight;
  if (k_scale > 0.0f) base.k_scale = k_scale;
  if (max_experts > 0) base.max_experts = max_experts;
  return base;
}

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_EXPERT_BUDGET_H_
