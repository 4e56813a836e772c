// Properties of the LapSum soft top-k and SoftMoE truncation (spec softmoe.md §2-§3, §8).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/moe/lapsum.h"
#include "engine/moe/router.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

std::vector<float> SoftTopK(const std::vector<float>& z, double k, double alpha, double* tau = nullptr) {
  const int n = static_cast<int>(z.size());
  std::vector<float> p(n);
  std::vector<double> work(3 * n);
  const double t = LapSumSoftTopK(z.data(), n, k, alpha, p.data(), work.data());
  if (tau != nullptr) *tau = t;
  return p;
}

double Sum(const std::vector<float>& p) { return std::accumulate(p.begin(), p.end(), 0.0); }

std::vector<float> RandomLogits(int n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> z(n);
  for (float& v : z) v = dist(rng);
  return z;
}

// One token through the router the engine builds for a layer with this k.
Routing Route(const std::vector<float>& z, double k, double alpha = 1.0, double c = 1.8, double gamma = 2.0,
              const ExpertBudget& budget = {}) {
  RouterSpec spec;
  spec.kind = RouterKind::kLapSum;
  spec.num_experts = static_cast<int>(z.size());
  spec.lapsum_scale = alpha;
  spec.threshold_coeff = c;
  spec.cap_coeff = gamma;
  const LapSumConstants constants = MakeLapSumConstants(k, spec.num_experts, c, gamma);
  spec.lapsum_k = constants.k;
  spec.lapsum_cap = constants.cap;
  spec.lapsum_theta0 = constants.theta0;
  RouterScratch scratch;
  Routing out;
  MakeRouter(spec)->RouteToken(z.data(), scratch, out, budget);
  return out;
}

TEST(LapSumSoftTopK, SumsToKBeforeTruncation) {
  for (int n : {2, 4, 8, 32, 64, 128, 256}) {
    for (double k : {0.25, 1.0, 1.5, 2.0, 3.7}) {
      if (k >= n) continue;
      for (double alpha : {0.1, 1.0, 10.0}) {
        const std::vector<float> p = SoftTopK(RandomLogits(n, 2.0f, n * 31 + static_cast<int>(k * 8)), k, alpha);
        EXPECT_NEAR(Sum(p), k, 1.5e-5) << "n=" << n << " k=" << k << " alpha=" << alpha;
        for (float v : p) {
          EXPECT_GE(v, 0.0f);  // in (0, 1) exactly; fp32 may round a far tail to 0
          EXPECT_LE(v, 1.0f);
        }
      }
    }
  }
}

TEST(LapSumSoftTopK, PreservesOrder) {
  const std::vector<float> z = RandomLogits(64, 3.0f, 5);
  const std::vector<float> p = SoftTopK(z, 4.5, 1.0);
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 64; ++j) {
      if (z[i] < z[j]) {
        EXPECT_LE(p[i], p[j]);
      }
    }
  }
}

TEST(LapSumSoftTopK, ShiftInvariant) {
  // Logits on a 1/256 grid: z + 1000 is exact in fp32, so p must be bit-identical.
  std::vector<float> z = RandomLogits(32, 2.0f, 11);
  for (float& v : z) v = std::round(v * 256.0f) / 256.0f;
  std::vector<float> shifted(z);
  for (float& v : shifted) v += 1000.0f;
  for (double alpha : {0.1, 1.0, 10.0}) {
    double tau = 0, tau_shifted = 0;
    const std::vector<float> p = SoftTopK(z, 2.5, alpha, &tau);
    const std::vector<float> q = SoftTopK(shifted, 2.5, alpha, &tau_shifted);
    EXPECT_EQ(p, q) << "alpha=" << alpha;
    EXPECT_NEAR(tau_shifted - tau, 1000.0, 1e-9);
    const Routing a = Route(z, 2.5, alpha), b = Route(shifted, 2.5, alpha);
    EXPECT_EQ(a.experts, b.experts);
    EXPECT_EQ(a.weights, b.weights);
  }
}

TEST(LapSumSoftTopK, NoOverflowOnHugeLogits) {
  std::vector<float> z = {3e4f, -3e4f, 2.9e4f, 0.0f, 1e4f, -1e30f, 1e30f, 5.0f};
  const std::vector<float> p = SoftTopK(z, 2.0, 1.0);
  for (float v : p) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(Sum(p), 2.0, 1e-6);
}

TEST(LapSumSoftTopK, SmallAlphaRecoversHardTopK) {
  // Gaps >> alpha: p -> the indicator of the k largest logits, for integer k.
  const std::vector<float> z = {0.3f, 2.0f, -1.0f, 5.0f, 1.1f, -4.0f, 3.2f, 0.0f};
  for (int k : {1, 2, 3, 5}) {
    std::vector<int> order(z.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
    const std::vector<float> p = SoftTopK(z, k, 1e-3);
    for (int r = 0; r < static_cast<int>(z.size()); ++r) {
      EXPECT_NEAR(p[order[r]], r < k ? 1.0 : 0.0, 1e-6) << "k=" << k << " rank " << r;
    }
    // And the router then activates exactly those k (cap = 2k, θ0 = 1.8k/8 clamps to lo or
    // a value between 0 and 1).
    const Routing routing = Route(z, k, 1e-3);
    std::vector<int32_t> expected(order.begin(), order.begin() + k);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(routing.experts, expected) << "k=" << k;
  }
}

TEST(LapSumSoftTopK, LargeAlphaTendsToUniform) {
  const std::vector<float> p = SoftTopK(RandomLogits(16, 1.0f, 3), 3.0, 1e6);
  for (float v : p) EXPECT_NEAR(v, 3.0 / 16, 1e-5);
}

TEST(LapSumRouter, EqualLogitsGiveKOverNAndActivateAll) {
  for (int n : {4, 8, 32, 128}) {
    for (double k : {1.0, 1.5, 2.0}) {
      const std::vector<float> z(n, 0.75f);
      const std::vector<float> p = SoftTopK(z, k, 1.0);
      for (float v : p) EXPECT_NEAR(v, k / n, 1e-7);
      const Routing routing = Route(z, k);
      ASSERT_EQ(routing.num_tokens(), 1);
      EXPECT_EQ(routing.num_active[0], n) << "ties at the cap-th weight keep every tied expert";
      EXPECT_EQ(static_cast<int>(routing.experts.size()), n);
    }
  }
}

TEST(LapSumRouter, AtLeastOneActiveAndAtMostCap) {
  for (uint32_t seed = 0; seed < 200; ++seed) {
    const int n = 8 << (seed % 4);
    const double k = 1.0 + (seed % 7) * 0.35;
    const float scale = 0.1f + (seed % 5) * 2.0f;
    const Routing routing = Route(RandomLogits(n, scale, seed), k);
    const int cap = std::min(static_cast<int>(std::ceil(2.0 * k)), n);
    EXPECT_GE(routing.num_active[0], 1);
    EXPECT_LE(routing.num_active[0], cap);  // random logits: no ties at the cap-th weight
    EXPECT_EQ(routing.num_active[0], static_cast<int>(routing.experts.size()));
    EXPECT_TRUE(std::is_sorted(routing.experts.begin(), routing.experts.end()));
  }
}

TEST(LapSumRouter, WeightsAreTheSoftWeightsNotRenormalised) {
  const std::vector<float> z = RandomLogits(32, 1.5f, 17);
  const double k = 2.5;
  const std::vector<float> p = SoftTopK(z, k, 1.0);
  const Routing routing = Route(z, k);
  double sum = 0;
  for (size_t i = 0; i < routing.experts.size(); ++i) {
    EXPECT_EQ(routing.weights[i], p[routing.experts[i]]);
    EXPECT_TRUE(routing.active[i]);
    sum += routing.weights[i];
  }
  EXPECT_LE(sum, k + 1e-6);
  EXPECT_GT(routing.experts.size(), 1u);
  EXPECT_GT(std::fabs(sum - 1.0), 1e-3) << "weights must not be normalised to 1";
}

TEST(LapSumRouter, TruncationFollowsTheClampedThreshold) {
  const std::vector<float> z = RandomLogits(16, 2.0f, 23);
  const double k = 1.5;
  const std::vector<float> p = SoftTopK(z, k, 1.0);
  std::vector<float> sorted(p);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  const int cap = 3;  // ⌈2·1.5⌉
  const float theta0 = static_cast<float>(1.8 * k / 16);
  const float theta = std::min(std::max(theta0, sorted[cap - 1]), sorted[0]);
  std::vector<float> scratch(16);
  EXPECT_EQ(LapSumThreshold(p.data(), 16, cap, theta0, scratch.data()), theta);
  std::vector<int32_t> expected;
  for (int e = 0; e < 16; ++e) {
    if (p[e] >= theta) expected.push_back(e);
  }
  EXPECT_EQ(Route(z, k).experts, expected);
}

TEST(LapSumRouter, ThresholdAboveOneKeepsOnlyTheMax) {
  // c·k/n > 1 (the quirk of §3): θ = max p, one expert survives.
  const std::vector<float> z = RandomLogits(8, 1.0f, 29);
  const Routing routing = Route(z, 5.0, 1.0, /*c=*/1.8);
  EXPECT_EQ(routing.num_active[0], 1);
  EXPECT_EQ(routing.experts[0], std::max_element(z.begin(), z.end()) - z.begin());
}

TEST(LapSumSoftTopK, ExtremeGapsTakeTheZeroBranchWithoutNaN) {
  // Integer k makes e = w − m exactly 0; adjacent gaps of 1000/α make e^(u_m − u_{m+1})
  // underflow, so D = 0 and ln D = −∞ unless the closed e = 0 branch is used.
  for (double alpha : {0.1, 1.0}) {
    const std::vector<float> z = {0.0f, 1000.0f, 2000.0f, 3000.0f, 4000.0f, 5000.0f, 6000.0f, 7000.0f};
    for (int k = 1; k < 8; ++k) {
      double tau = 0;
      const std::vector<float> p = SoftTopK(z, k, alpha, &tau);
      EXPECT_TRUE(std::isfinite(tau)) << "k=" << k;
      for (int i = 0; i < 8; ++i) {
        ASSERT_TRUE(std::isfinite(p[i])) << "k=" << k << " i=" << i;
        EXPECT_NEAR(p[i], i >= 8 - k ? 1.0 : 0.0, 1e-6);
      }
      // The threshold sits halfway between the k-th and (k+1)-th logit.
      EXPECT_NEAR(tau, 1000.0 * (7 - k) + 500.0, 1e-6);
      const Routing routing = Route(z, k, alpha);
      EXPECT_EQ(routing.num_active[0], k);
    }
  }
}

TEST(LapSumSoftTopK, KClampedToItsDomain) {
  const std::vector<float> z = RandomLogits(8, 1.0f, 31);
  for (double k : {0.0, -1.0, 8.0, 9.0}) {
    const std::vector<float> p = SoftTopK(z, k, 1.0);
    for (float v : p) EXPECT_TRUE(std::isfinite(v)) << "k=" << k;
    EXPECT_NEAR(Sum(p), ClampLapSumK(k, 8), 2e-5);
  }
  EXPECT_EQ(ClampLapSumK(0.0, 8), 1e-6);
  EXPECT_EQ(ClampLapSumK(8.0, 8), 8 - 1e-6);
  EXPECT_EQ(ClampLapSumK(2.5, 8), 2.5);
}

TEST(LapSumConstants, CapAndThreshold) {
  const LapSumConstants a = MakeLapSumConstants(1.5, 32, 1.8, 2.0);
  EXPECT_EQ(a.cap, 3);
  EXPECT_EQ(a.theta0, static_cast<float>(1.8 * 1.5 / 32));
  EXPECT_EQ(MakeLapSumConstants(1.25, 32, 1.8, 2.0).cap, 3);   // ⌈2.5⌉
  EXPECT_EQ(MakeLapSumConstants(3.99, 8, 1.8, 4.0).cap, 8);    // min(⌈15.96⌉, n)
  EXPECT_EQ(MakeLapSumConstants(0.2, 8, 1.8, 2.0).cap, 1);
}

TEST(LapSumRouter, NonFiniteLogitsPoisonTheToken) {
  std::vector<float> z = RandomLogits(8, 1.0f, 37);
  z[3] = std::nanf("");
  const Routing routing = Route(z, 2.0);
  ASSERT_EQ(routing.experts.size(), 8u);
  for (float w : routing.weights) EXPECT_TRUE(std::isnan(w));
}

TEST(LapSumRouter, KScaleBudgetRecomputesCapAndThreshold) {
  // k_scale 0.5 on k = 2: the router behaves as the exact router with k = 1.
  for (uint32_t seed = 0; seed < 50; ++seed) {
    const std::vector<float> z = RandomLogits(32, 1.0f + seed % 3, seed + 100);
    ExpertBudget half;
    half.k_scale = 0.5f;
    const Routing scaled = Route(z, 2.0, 1.0, 1.8, 2.0, half);
    const Routing exact_k1 = Route(z, 1.0);
    EXPECT_EQ(scaled.experts, exact_k1.experts);
    EXPECT_EQ(scaled.weights, exact_k1.weights);
    EXPECT_LE(scaled.num_active[0], 2);  // cap ⌈2·1⌉
  }
  // Scaling past the domain clamps instead of failing.
  ExpertBudget huge;
  huge.k_scale = 100.0f;
  const Routing r = Route(RandomLogits(8, 1.0f, 1), 2.0, 1.0, 1.8, 2.0, huge);
  EXPECT_GE(r.num_active[0], 1);
  for (float w : r.weights) EXPECT_TRUE(std::isfinite(w));
}

}  // namespace
}  // namespace moeserve
