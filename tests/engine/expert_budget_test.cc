// The serve-time expert budget in every router family (engine/expert_budget.h): the default is
// exact, and each knob lowers the realised active count as documented.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/expert_budget.h"
#include "engine/moe/router.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

std::vector<float> RandomLogits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.5f);
  std::vector<float> z(n);
  for (float& v : z) v = dist(rng);
  return z;
}

Routing RouteAll(const RouterSpec& spec, const std::vector<std::vector<float>>& tokens, const ExpertBudget& budget) {
  auto router = MakeRouter(spec);
  RouterScratch scratch;
  Routing out;
  for (const auto& z : tokens) router->RouteToken(z.data(), scratch, out, budget);
  return out;
}

std::vector<std::vector<float>> Tokens(int n, int count) {
  std::vector<std::vector<float>> t;
  for (int i = 0; i < count; ++i) t.push_back(RandomLogits(n, 1000 + i));
  return t;
}

RouterSpec Spec(RouterKind kind, int n) {
  RouterSpec spec;
  spec.kind = kind;
  spec.num_experts = n;
  if (kind == RouterKind::kDecoRelu) {
    spec.norm = RouterNormType::kSimple;
    spec.norm_weight.resize(n);
    for (int e = 0; e < n; ++e) spec.norm_weight[e] = (e % 5 == 0 ? -0.1f : 0.1f) * (1 + e % 3);
  }
  if (kind == RouterKind::kTopK) {
    spec.topk = 4;
    spec.score_function = ScoreFunction::kSigmoid;
  }
  if (kind == RouterKind::kTopP) spec.topp = 0.6;
  if (kind == RouterKind::kLapSum) {
    spec.lapsum_k = 2.0;
    spec.lapsum_cap = 4;
    spec.lapsum_theta0 = static_cast<float>(1.8 * 2.0 / n);
  }
  return spec;
}

void ExpectSame(const Routing& a, const Routing& b) {
  EXPECT_EQ(a.offsets, b.offsets);
  EXPECT_EQ(a.experts, b.experts);
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.active, b.active);
  EXPECT_EQ(a.num_active, b.num_active);
}

int64_t TotalActive(const Routing& r) {
  int64_t n = 0;
  for (int32_t c : r.num_active) n += c;
  return n;
}

TEST(ExpertBudget, DefaultIsExactAndValid) {
  const ExpertBudget b;
  EXPECT_TRUE(b.IsExact());
  EXPECT_EQ(b.Invalid(), nullptr);
  ExpertBudget bad;
  bad.min_weight = -1;
  EXPECT_NE(bad.Invalid(), nullptr);
  bad = {};
  bad.k_scale = 0;
  EXPECT_NE(bad.Invalid(), nullptr);
  bad = {};
  bad.k_scale = std::nanf("");
  EXPECT_NE(bad.Invalid(), nullptr);
  bad = {};
  bad.max_experts = -2;
  EXPECT_NE(bad.Invalid(), nullptr);
}

TEST(ExpertBudget, DefaultBudgetEqualsTheThreeArgumentCall) {
  const auto tokens = Tokens(16, 32);
  for (RouterKind kind :
       {RouterKind::kDecoRelu, RouterKind::kTopK, RouterKind::kReMoE, RouterKind::kTopP, RouterKind::kLapSum}) {
    auto router = MakeRouter(Spec(kind, 16));
    RouterScratch scratch;
    Routing plain;
    for (const auto& z : tokens) router->RouteToken(z.data(), scratch, plain);
    ExpectSame(plain, RouteAll(Spec(kind, 16), tokens, ExpertBudget{}));
  }
}

TEST(ExpertBudget, KnobsOfOtherRoutersAreIgnored) {
  const auto tokens = Tokens(16, 16);
  ExpertBudget other;
  other.k_scale = 0.5f;  // SoftMoE only
  ExpectSame(RouteAll(Spec(RouterKind::kDecoRelu, 16), tokens, {}),
             RouteAll(Spec(RouterKind::kDecoRelu, 16), tokens, other));
  ExpertBudget cap;
  cap.max_experts = 1;  // top-k / TopP only
  ExpectSame(RouteAll(Spec(RouterKind::kLapSum, 16), tokens, {}), RouteAll(Spec(RouterKind::kLapSum, 16), tokens, cap));
}

TEST(ExpertBudget, DecoMinWeightDropsSmallMagnitudes) {
  const auto tokens = Tokens(16, 64);
  const RouterSpec spec = Spec(RouterKind::kDecoRelu, 16);
  const Routing exact = RouteAll(spec, tokens, {});
  ExpertBudget b;
  b.min_weight = 0.1f;
  const Routing cut = RouteAll(spec, tokens, b);
  EXPECT_LT(TotalActive(cut), TotalActive(exact));
  bool saw_negative = false;
  for (size_t i = 0; i < cut.weights.size(); ++i) {
    EXPECT_GE(std::fabs(cut.weights[i]), 0.1f);
    saw_negative |= cut.weights[i] < 0;
  }
  EXPECT_TRUE(saw_negative) << "a large negative weight is kept: the magnitude decides";
  for (int64_t t = 0; t < cut.num_tokens(); ++t) {
    EXPECT_EQ(cut.num_active[t], cut.offsets[t + 1] - cut.offsets[t]);
    // Exactly the exact entries with |w| >= min_weight.
    std::vector<int32_t> expected;
    for (int32_t i = exact.offsets[t]; i < exact.offsets[t + 1]; ++i) {
      if (std::fabs(exact.weights[i]) >= 0.1f) expected.push_back(exact.experts[i]);
    }
    EXPECT_EQ(std::vector<int32_t>(cut.experts.begin() + cut.offsets[t], cut.experts.begin() + cut.offsets[t + 1]),
              expected);
  }
}

TEST(ExpertBudget, DecoNormalNormCountsOnlyKeptActiveEntries) {
  RouterSpec spec = Spec(RouterKind::kDecoRelu, 16);
  spec.norm = RouterNormType::kNormal;
  const auto tokens = Tokens(16, 32);
  ExpertBudget b;
  b.min_weight = 0.1f;
  const Routing cut = RouteAll(spec, tokens, b);
  for (int64_t t = 0; t < cut.num_tokens(); ++t) {
    int active = 0;
    for (int32_t i = cut.offsets[t]; i < cut.offsets[t + 1]; ++i) {
      active += cut.active[i];
      EXPECT_GE(std::fabs(cut.weights[i]), 0.1f);
    }
    EXPECT_EQ(cut.num_active[t], active);
  }
  EXPECT_LT(TotalActive(cut), TotalActive(RouteAll(spec, tokens, {})));
}

TEST(ExpertBudget, ReMoEMinWeight) {
  const auto tokens = Tokens(16, 64);
  const RouterSpec spec = Spec(RouterKind::kReMoE, 16);
  ExpertBudget b;
  b.min_weight = 1.0f;
  const Routing exact = RouteAll(spec, tokens, {}), cut = RouteAll(spec, tokens, b);
  EXPECT_LT(TotalActive(cut), TotalActive(exact));
  for (float w : cut.weights) EXPECT_GE(w, 1.0f);
  for (int64_t t = 0; t < cut.num_tokens(); ++t) EXPECT_LE(cut.num_active[t], exact.num_active[t]);
}

TEST(ExpertBudget, TopKCapsK) {
  const auto tokens = Tokens(16, 32);
  const RouterSpec spec = Spec(RouterKind::kTopK, 16);
  for (int cap : {1, 2, 3, 4, 9}) {
    ExpertBudget b;
    b.max_experts = cap;
    const Routing r = RouteAll(spec, tokens, b);
    RouterSpec smaller = spec;
    smaller.topk = std::min(cap, spec.topk);
    ExpectSame(r, RouteAll(smaller, tokens, {}));  // exactly a top-k router with k' = min(k, cap)
    for (int32_t c : r.num_active) EXPECT_EQ(c, std::min(cap, 4));
  }
}

TEST(ExpertBudget, TopPCapsTheActiveCountKeepingTheLargest) {
  const auto tokens = Tokens(16, 64);
  const RouterSpec spec = Spec(RouterKind::kTopP, 16);
  const Routing exact = RouteAll(spec, tokens, {});
  ExpertBudget b;
  b.max_experts = 2;
  const Routing r = RouteAll(spec, tokens, b);
  EXPECT_LT(TotalActive(r), TotalActive(exact));
  for (int64_t t = 0; t < r.num_tokens(); ++t) {
    EXPECT_EQ(r.num_active[t], std::min(2, exact.num_active[t]));
    float smallest_kept = INFINITY, largest_dropped = 0;
    for (int32_t i = exact.offsets[t]; i < exact.offsets[t + 1]; ++i) {
      const bool kept = std::find(r.experts.begin() + r.offsets[t], r.experts.begin() + r.offsets[t + 1],
                                  exact.experts[i]) != r.experts.begin() + r.offsets[t + 1];
      if (kept) {
        smallest_kept = std::min(smallest_kept, exact.weights[i]);
      } else {
        largest_dropped = std::max(largest_dropped, exact.weights[i]);
      }
    }
    EXPECT_GE(smallest_kept, largest_dropped);  // weights unchanged, largest first
  }
}

TEST(ExpertBudget, LapSumKScaleLowersTheTotal) {
  const auto tokens = Tokens(16, 64);
  const RouterSpec spec = Spec(RouterKind::kLapSum, 16);
  ExpertBudget b;
  b.k_scale = 0.5f;
  EXPECT_LT(TotalActive(RouteAll(spec, tokens, b)), TotalActive(RouteAll(spec, tokens, {})));
  b.k_scale = 0.25f;  // k = 0.5: cap ⌈1⌉ = 1, one expert per token
  for (int32_t c : RouteAll(spec, tokens, b).num_active) EXPECT_EQ(c, 1);
}

}  // namespace
}  // namespace moeserve
