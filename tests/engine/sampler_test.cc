// The sampler against a direct implementation of its definition (sort everything, truncate by
// top-k, top-p, min-p, draw from what is left): the partial sorting must keep the same tokens.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace moeserve {
namespace {

// The kept candidates, best first, by the definition (a full sort).
std::vector<int32_t> KeptByDefinition(std::vector<float> logits, const SamplingParams& p) {
  for (float& l : logits) l /= p.temperature;
  const int32_t V = static_cast<int32_t>(logits.size());
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; });
  int32_t keep = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  const double max_logit = logits[order[0]];
  double total = 0;
  for (int32_t i = 0; i < keep; ++i) total += std::exp(logits[order[i]] - max_logit);
  if (p.top_p < 1.0f) {
    double cumulative = 0;
    for (int32_t i = 0; i < keep; ++i) {
      cumulative += std::exp(logits[order[i]] - max_logit) / total;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0f) {
    const double floor_logit = max_logit + std::log(double{p.min_p});
    int32_t i = 1;
    while (i < keep && logits[order[i]] >= floor_logit) ++i;
    keep = i;
  }
  order.resize(keep);
  return order;
}

std::vector<float> RandomLogits(int V, uint64_t seed, float spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> logits(V);
  for (float& l : logits) l = normal(rng);
  logits[V / 3] = logits[V / 2];  // a tie, broken by id
  return logits;
}

TEST(SamplerTest, GreedyIsTheArgmaxAndTiesGoToTheLowestId) {
  std::vector<float> logits = RandomLogits(5000, 1, 2.0f);
  const int32_t best = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(greedy.Sample(logits, {}).id, best);
  logits[4000] = logits[best];
  EXPECT_EQ(greedy.Sample(logits, {}).id, std::min(best, 4000));
}

TEST(SamplerTest, DrawsOnlyTheTokensTheTruncationsKeep) {
  const int V = 8000;
  struct Case {
    int top_k;
    float top_p, min_p;
  };
  // top-p small and large (the large one needs more than the first sorted prefix), top-k,
  // min-p, and their combinations.
  const Case cases[] = {{0, 0.5f, 0}, {0, 0.999f, 0}, {40, 1.0f, 0}, {0, 1.0f, 0.05f},
                        {300, 0.9f, 0}, {0, 0.95f, 0.01f}, {5000, 0.99f, 0.001f}};
  for (const Case& c : cases) {
    for (uint64_t seed = 0; seed < 4; ++seed) {
      SamplingParams p;
      p.temperature = 0.8f;
      p.top_k = c.top_k;
      p.top_p = c.top_p;
      p.min_p = c.min_p;
      p.seed = seed;
      const std::vector<float> logits = RandomLogits(V, 100 + seed, seed % 2 ? 4.0f : 1.0f);
      const std::vector<int32_t> kept = KeptByDefinition(logits, p);
      ASSERT_LT(kept.size(), static_cast<size_t>(V));
      Sampler sampler(p);
      std::vector<int> hits(V, 0);
      for (int draw = 0; draw < 40; ++draw) ++hits[sampler.Sample(logits, {}).id];
      int inside = 0;
      for (int32_t id : kept) inside += hits[id];
      EXPECT_EQ(inside, 40) << "top_k " << c.top_k << " top_p " << c.top_p << " min_p " << c.min_p << " seed "
                             << seed << ": a draw fell outside the kept set of " << kept.size();
    }
  }
}

TEST(SamplerTest, UntruncatedSamplingFollowsTheSoftmax) {
  // Whole vocabulary kept: the frequencies match softmax(logits / T) (drawn in id order).
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
  SamplingParams p;
  p.temperature = 0.7f;
  p.seed = 7;
  Sampler sampler(p);
  std::vector<int> hits(logits.size(), 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) ++hits[sampler.Sample(logits, {}).id];
  double z = 0;
  for (float l : logits) z += std::exp(l / p.temperature);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double expected = std::exp(logits[i] / p.temperature) / z;
    EXPECT_NEAR(hits[i] / static_cast<double>(draws), expected, 0.01) << "token " << i;
  }
}

TEST(SamplerTest, SameSeedSameTokens) {
  const std::vector<float> logits = RandomLogits(3000, 5, 2.0f);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.seed = 42;
  Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Sample(logits, {}).id, b.Sample(logits, {}).id);
}

}  // namespace
}  // namespace moeserve
