// Routers: map a token's fp32 router logits to its variable-length list of (expert, weight).
// One implementation per router family of spec deco.md §3.3 (DECO/BlockFFN ReLU routing) and
// §4 (top-k, ReMoE, TopP).
#ifndef MOESERVE_ENGINE_MOE_ROUTER_H_
#define MOESERVE_ENGINE_MOE_ROUTER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

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
};

// Per-thread workspace of a router, reused across tokens (no allocation in the step loop).
struct RouterScratch {
  std::vector<float> values;
  std::vector<int> indices;
};

class Router {
 public:
  virtual ~Router() = default;
  // Appends one token's entries to `out` and closes the token. `logits` has num_experts values.
  // Routers are immutable after construction; concurrent calls need separate scratch.
  virtual void RouteToken(const float* logits, RouterScratch& scratch, Routing& out) const = 0;
};

std::unique_ptr<Router> MakeRouter(const RouterSpec& spec);

// The families behind MakeRouter, one file each.
std::unique_ptr<Router> MakeDecoRouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeTopKRouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeReMoERouter(const RouterSpec& spec);
std::unique_ptr<Router> MakeTopPRouter(const RouterSpec& spec);

// Re-expresses `in` with every expert evaluated (weight 0 where not routed); `active` flags are
// kept. The --dense-experts debug path, to compare sparse against dense execution.
void ExpandToAllExperts(const Routing& in, int num_experts, Routing& out);

}  // namespace moeserve

#endif  // MOESERVE_ENGINE_MOE_ROUTER_H_
