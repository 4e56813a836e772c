// DECO / BlockFFN routing (spec deco.md §3.3 steps 1-4): ReLU of fp32 logits decides the
// active set; the expert-wise scaling ("router norm") produces the weights.
#include <cmath>

#include "engine/moe/router.h"

namespace moeserve {
namespace {

class DecoRouter final : public Router {
 public:
  explicit DecoRouter(const RouterSpec& spec) : spec_(spec) {}

 private:
  // Budget: entries whose |weight| < min_weight are dropped (weights may be negative; the
  // magnitude of the contribution decides). Off (0) keeps the exact path.
  void Route(const float* l, const ExpertBudget& budget, RouterScratch& scratch, Routing& out) const override {
    const int n = spec_.num_experts;
    std::vector<float>& r = scratch.values;
    r.resize(n);
    // Expert bias only gates (`base`: l + b > 0; `rms`: l + b * rms(l) > 0).
    float bias_scale = 1.0f;
    if (!spec_.expert_bias.empty() && spec_.bias_apply == BiasApply::kRms) {
      double sq = 0;
      for (int e = 0; e < n; ++e) sq += double{l[e]} * l[e];
      bias_scale = static_cast<float>(std::sqrt(sq / n));
    }
    int active = 0;
    for (int e = 0; e < n; ++e) {
      float v = l[e] > 0.0f ? l[e] : 0.0f;
      if (v != 0.0f && !spec_.expert_bias.empty() && !(l[e] + spec_.expert_bias[e] * bias_scale > 0.0f)) {
        v = 0.0f;
      }
      r[e] = v;
      active += v != 0.0f;
    }
    const std::vector<float>& w = spec_.norm_weight;
    auto weight_of = [&](int e) { return w.size() == 1 ? w[0] : w[e]; };
    const float min_weight = budget.min_weight;
    auto dropped = [&](float g) { return min_weight > 0.0f && std::fabs(g) < min_weight; };
    // Adds an active entry unless the budget drops it (then it no longer counts as active).
    auto add_active = [&](int e, float g) {
      if (dropped(g)) {
        --active;
      } else {
        out.Add(e, g, true);
      }
    };
    switch (spec_.norm) {
      case RouterNormType::kSimple:
        for (int e = 0; e < n; ++e) {
          if (r[e] != 0.0f) add_active(e, r[e] * weight_of(e));
        }
        break;
      case RouterNormType::kRms: {
        double sq = 0;
        for (int e = 0; e < n; ++e) sq += double{r[e]} * r[e];
        const float inv = static_cast<float>(1.0 / std::sqrt(sq / n + spec_.epsilon));
        for (int e = 0; e < n; ++e) {
          if (r[e] != 0.0f) add_active(e, r[e] * inv * weight_of(e));
        }
        break;
      }
      case RouterNormType::kNormal: {
        // Centring gives every expert a non-zero weight: all are evaluated.
        double sum = 0;
        for (int e = 0; e < n; ++e) sum += r[e];
        const double mean = sum / n;
        double sq = 0;
        for (int e = 0; e < n; ++e) sq += (r[e] - mean) * (r[e] - mean);
        const double inv = 1.0 / std::sqrt(sq / n + spec_.epsilon);
        for (int e = 0; e < n; ++e) {
          const float g = static_cast<float>((r[e] - mean) * inv) * weight_of(e);
          if (dropped(g)) {
            active -= r[e] != 0.0f;
          } else {
            out.Add(e, g, r[e] != 0.0f);
          }
        }
        break;
      }
      case RouterNormType::kNull:
        for (int e = 0; e < n; ++e) {
          if (r[e] != 0.0f) add_active(e, r[e]);
        }
        break;
    }
    out.EndToken(active);
  }

  RouterSpec spec_;
};

}  // namespace

std::unique_ptr<Router> MakeDecoRouter(const RouterSpec& spec) { return std::make_unique<DecoRouter>(spec); }

}  // namespace moeserve
