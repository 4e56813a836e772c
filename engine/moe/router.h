// Routers: map a token's fp32 router logits to its variable-length list of (expert, weight).
// One implementation per router family of spec deco.md §3.3 (DECO/BlockFFN ReLU routing) and
// §4 (top-k, ReMoE, TopP), and SoftMoE's LapSum soft top-k (spec softmoe.md §2-§4).
#ifndef MOESERVE_ENGINE_MOE_ROUTER_H_
#define MOESERVE_ENGINE_MOE_ROUTER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/expert_budget.h"
#include "engine/moe/moe_types.h"
#include "engine/moe/routing.h"

namespace moeserve {

// Everything a router needs, resolved from config and tensors at load time.
struct RouterSpec {
  RouterKind kind = RouterKind::kDecoRelu;
  int num_experts = 0;
  float epsilon = 1e-5f;
  // DECO expert-wise scaling: weights of size num_experts, or 1 (scalar / fixed).
  RouterNormType norm = RouterNormType::kSimple;
  std::vector<float> norm_weight;
  // Expert bias (gates only; never enters weights). Empty = off.
  std::vector<float> expert_bias;
  BiasApply bias_apply = BiasApply::kBase;
  // Top-k.
  int topk = 2;
  ScoreFunction score_function = ScoreFunction::kSoftmax;
  bool pre_softmax = false;
  std::optional<double> scaling_factor;
  // TopP.
  double topp = 0.5;
  // ReMoE clamp (router_clamp_act_ratio); >= 1 is off.
  double clamp_ratio = 1.0;
  // LapSum (SoftMoE), one layer: k_l, α, c, γ, and cap_l = min(⌈γ·k_l⌉, n), θ0_l = c·k_l/n
  // (rounded to fp32) precomputed in float64 at load (spec softmoe.md §7.2.1).
  double lapsum_k = 1.0;
  double lapsum_scale = 1.0;     // α, the Laplace scale
  double threshold_coeff = 1.8;  // c
  double cap_coeff = 2.0;        // γ
  int lapsum_cap = 1;
  float lapsum_theta0 = 0.0f;
};

// Per-thread workspace of a router, reused across tokens (no allocation in the step loop).
struct RouterScratch {
  std::vector<float> values;
  std::vector<int> indices;
  std::vector<double> work;  // LapSum: sorted scaled logits and the two running sums
};

class Router {
 public:
  virtual ~Router() = default;
  // Appends one token's entries to `out` and closes the token. `logits` has num_experts values.
  // `budget` limits the token's experts (engine/expert_budget.h); the default is exact.
  // Routers are immutable after construction; concurrent calls need separate scratch.
  void RouteToken(const float* logits, RouterScratch& scratch, Routing& out,
                  const ExpertBudget& budget = ExpertBudget{}) const {
    Route(logits, budget, scratch, out);
  }

 private:
  virtual void Route(const float* logits, const ExpertBudget& budget, RouterScratch& scratch,
                     Routing& out) const = 0;
};

std::unique_ptr<Router> MakeRouter(const RouterSpec& spec);

// The families behind MakeRouter, one file each.
std::unique_ptr<Router> MakeDecoRouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeTopKRouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeReMoERouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeTopPRouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeLapSumRouter(const RouterSpec& spec);

// Re-expresses `in` with every expert evaluated (weight 0 where not routed); `active` flags are
// kept. The --dense-experts debug path, to compare sparse against dense execution.
void ExpandToAllExperts(const Routing& in, int num_experts, Routing& out);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_ROUTER_H_
