// The routed MoE layer gives a token the same bits alone and inside a batch whose tokens share
// experts (grouped up-projections, row-tiled down projection per token or expert-major,
// threads splitting the work), also with the up (and gate) rows packed in panels.
#include "engine/moe/expert_executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/cpu/panel_pack.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "engine/moe/expert_bank.h"
#include "engine/moe/routing.h"
#include "tests/engine/test_matrix.h"

namespace moeserve {
namespace {

constexpr int kExperts = 8;
constexpr int64_t kHidden = 40;  // 40 rows: tiles of 16 and 32 both leave a partial one

struct Bank {
  std::vector<float> up_f32, down_f32;
  std::vector<uint16_t> up_bf16, down_bf16;
  ExpertBank bank;
};

// Width 16 has no expert-major kernel (the executor falls back); 64 has one under AVX-512-BF16.
Bank MakeBank(DType dtype, int64_t width, bool with_down_bias, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.3f);
  Bank b;
  b.up_f32.resize(kExperts * width * kHidden);
  b.down_f32.resize(kHidden * kExperts * width);
  for (float& v : b.up_f32) v = normal(rng);
  for (float& v : b.down_f32) v = normal(rng);
  const void* up = b.up_f32.data();
  const void* down = b.down_f32.data();
  if (dtype == DType::kBF16) {
    for (float v : b.up_f32) b.up_bf16.push_back(F32ToBf16(v));
    for (float v : b.down_f32) b.down_bf16.push_back(F32ToBf16(v));
    up = b.up_bf16.data();
    down = b.down_bf16.data();
  }
  ExpertBank& e = b.bank;
  e.num_experts = kExperts;
  e.width = width;
  e.hidden = kHidden;
  e.up = WeightMatrix{dtype, kExperts * width, kHidden, kHidden, up, nullptr};
  e.down = WeightMatrix{dtype, kHidden, kExperts * width, kExperts * width, down, nullptr};
  e.act = ExpertAct::kNormSilu;
  e.act_norm_weight.assign(width, 1.1f);
  e.mean_vector.resize(kHidden);
  for (float& v : e.mean_vector) v = normal(rng) * 0.1f;
  if (with_down_bias) {
    e.down_bias.resize(kExperts * kHidden);
    for (float& v : e.down_bias) v = normal(rng);
  }
  return b;
}

// Token t uses the experts of a fixed pattern (ascending; every expert gets several tokens).
Routing RouteTokens(const std::vector<int>& tokens) {
  Routing r;
  for (int t : tokens) {
    int count = 0;
    for (int e = 0; e < kExperts; ++e) {
      if (((t * 2654435761u) >> (e + 3)) & 1u) {
        r.Add(e, 0.1f + 0.05f * static_cast<float>((t + e) % 7), true);
        ++count;
      }
    }
    r.EndToken(count);
  }
  return r;
}

TEST(ExpertExecutorTest, TokenAloneAndInABatchGiveTheSameBits) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ThreadPool pool(2);
  using Order = ExpertExecutor::DownOrder;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t width : {16, 64}) {
      for (bool bias : {false, true}) {
        for (Order order : {Order::kAuto, Order::kPerToken, Order::kExpertMajor}) {
          const Bank b = MakeBank(dtype, width, bias, rng);
          constexpr int kTokens = 12;
          std::vector<int> all(kTokens);
          for (int t = 0; t < kTokens; ++t) all[t] = t;
          std::vector<float> m(kTokens * kHidden), residual(kTokens * kHidden);
          for (float& v : m) v = normal(rng);
          for (float& v : residual) v = normal(rng);

          const Routing batch_routing = RouteTokens(all);
          ASSERT_GE(batch_routing.experts.size(), 2u * kExperts) << "experts must be shared by several tokens";
          ExpertExecutor batch_executor(&pool);
          batch_executor.set_down_order(order);
          std::vector<float> batched = residual;
          batch_executor.Run(b.bank, m.data(), kTokens, batch_routing, batched.data());

          ExpertExecutor single_executor(&pool);
          single_executor.set_down_order(Order::kPerToken);
          for (int t = 0; t < kTokens; ++t) {
            const Routing alone = RouteTokens({t});
            std::vector<float> y(residual.begin() + t * kHidden, residual.begin() + (t + 1) * kHidden);
            single_executor.Run(b.bank, &m[t * kHidden], 1, alone, y.data());
            bool changed = false;
            for (int64_t r = 0; r < kHidden; ++r) {
              changed |= y[r] != residual[t * kHidden + r];
              EXPECT_EQ(std::memcmp(&y[r], &batched[t * kHidden + r], sizeof(float)), 0)
                  << DTypeName(dtype) << " width " << width << (bias ? " with down bias" : "") << " order "
                  << static_cast<int>(order) << " token " << t << " row " << r << ": " << y[r] << " alone vs "
                  << batched[t * kHidden + r] << " in the batch";
            }
            if (!alone.experts.empty()) {
              EXPECT_TRUE(changed) << "token " << t << " got no expert output";
            }
          }
        }
      }
    }
  }
}

// Up (and gate) rows packed in panels, as the engine packs them: an expert's one token reads
// the layer's prepared input in place, several a gathered copy; a token gets the same bits in
// steps of 1, 2 and 4 tokens as in one of 12, gated (with up and gate biases) or NormSiLU,
// bf16 or int8.
TEST(ExpertExecutorTest, PanelUpRowsGiveATokenTheSameBitsInStepsOfAnySize) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ThreadPool pool(3);
  constexpr int64_t kWidth = 48;  // three panels per expert
  for (DType dtype : {DType::kBF16, DType::kI8}) {
    if (!UsesPanels(dtype)) continue;
    for (bool gated : {false, true}) {
      const TestMatrix up = MakeMatrix(dtype, kExperts * kWidth, kHidden, rng);
      const TestMatrix gate = MakeMatrix(dtype, kExperts * kWidth, kHidden, rng);
      std::vector<float> down(kHidden * kExperts * kWidth);
      for (float& v : down) v = normal(rng) * 0.3f;
      PanelStorage up_panels, gate_panels;
      ExpertBank bank;
      bank.num_experts = kExperts;
      bank.width = kWidth;
      bank.hidden = kHidden;
      bank.up = PackPanels(up.View(), up_panels);
      bank.down = WeightMatrix{DType::kF32, kHidden, kExperts * kWidth, kExperts * kWidth, down.data(), nullptr};
      if (gated) {
        bank.gate = PackPanels(gate.View(), gate_panels);
        bank.act = ExpertAct::kSilu;
        bank.up_bias.resize(kExperts * kWidth);
        bank.gate_bias.resize(kExperts * kWidth);
        for (float& v : bank.up_bias) v = normal(rng);
        for (float& v : bank.gate_bias) v = normal(rng);
      } else {
        bank.act = ExpertAct::kNormSilu;
        bank.act_norm_weight.assign(kWidth, 0.9f);
        bank.mean_vector.resize(kHidden);
        for (float& v : bank.mean_vector) v = normal(rng) * 0.1f;
      }
      constexpr int kTokens = 12;
      std::vector<int> all(kTokens);
      for (int t = 0; t < kTokens; ++t) all[t] = t;
      std::vector<float> m(kTokens * kHidden), batched(kTokens * kHidden, 0.0f);
      for (float& v : m) v = normal(rng);
      ExpertExecutor executor(&pool);
      executor.Run(bank, m.data(), kTokens, RouteTokens(all), batched.data());
      // Steps of 1, 2 and 4 tokens over the same tokens.
      for (int step : {1, 2, 4}) {
        std::vector<float> stepped(kTokens * kHidden, 0.0f);
        for (int t0 = 0; t0 < kTokens; t0 += step) {
          std::vector<int> tokens;
          for (int t = t0; t < t0 + step; ++t) tokens.push_back(t);
          executor.Run(bank, &m[t0 * kHidden], step, RouteTokens(tokens), &stepped[t0 * kHidden]);
        }
        EXPECT_EQ(std::memcmp(stepped.data(), batched.data(), batched.size() * sizeof(float)), 0)
            << DTypeName(dtype) << (gated ? " gated" : " NormSiLU") << ", steps of " << step;
      }
      EXPECT_NE(std::count(batched.begin(), batched.end(), 0.0f), static_cast<long>(batched.size()));
    }
  }
}

// A `then` job (the shared expert's down projection) run inside the down region gives the bits
// of running it after Run, also when no token chose any expert.
TEST(ExpertExecutorTest, ThenJobInTheDownRegionEqualsRunningItAfter) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ThreadPool pool(2);
  constexpr int kTokens = 5, kSharedWidth = 24;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Bank b = MakeBank(dtype, 64, /*with_down_bias=*/true, rng);
    std::vector<float> shared_w(kHidden * kSharedWidth), shared_x(kTokens * kSharedWidth), m(kTokens * kHidden),
        residual(kTokens * kHidden);
    for (std::vector<float>* v : {&shared_w, &shared_x, &m, &residual}) {
      for (float& e : *v) e = normal(rng);
    }
    const WeightMatrix shared{DType::kF32, kHidden, kSharedWidth, kSharedWidth, shared_w.data(), nullptr};
    std::vector<int> all(kTokens);
    for (int t = 0; t < kTokens; ++t) all[t] = t;
    Routing none;
    for (int t = 0; t < kTokens; ++t) none.EndToken(0);
    for (const Routing& routing : {RouteTokens(all), none}) {
      std::vector<float> fused = residual, after = residual;
      const MatMulJob fused_job{&shared, shared_x.data(), kSharedWidth, fused.data(), kHidden, true};
      const MatMulJob after_job{&shared, shared_x.data(), kSharedWidth, after.data(), kHidden, true};
      ExpertExecutor fused_executor(&pool), after_executor(&pool);
      fused_executor.Run(b.bank, m.data(), kTokens, routing, fused.data(), &fused_job);
      after_executor.Run(b.bank, m.data(), kTokens, routing, after.data());
      ParallelMatMul(pool, std::span<const MatMulJob>(&after_job, 1), kTokens);
      EXPECT_EQ(std::memcmp(fused.data(), after.data(), fused.size() * sizeof(float)), 0)
          << DTypeName(dtype) << (routing.experts.empty() ? " no experts chosen" : "");
      EXPECT_NE(std::memcmp(fused.data(), residual.data(), fused.size() * sizeof(float)), 0);
    }
  }
}

}  // namespace
}  // namespace moeserve
