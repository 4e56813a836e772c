// Paged attention over a bf16 KV cache: the cache stores K and V rounded to bf16, and
// attention over it equals attention over an fp32 cache holding those rounded values (with
// the query rounded too where the kernel set multiplies bf16 by bf16), up to fp32 summation
// order; a bf16 block is half the bytes of an fp32 one.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/attention.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace moeserve {
namespace {

std::vector<float> Rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToF32(F32ToBf16(v[i]));
  return out;
}

TEST(PagedAttention, Bf16CacheMatchesF32CacheOnRoundedValues) {
  constexpr int kHeads = 4, kKvHeads = 2, kHeadDim = 64, kBlock = 4, kLen = 23;  // GQA, partial last block
  KvCacheShape shape{1, kKvHeads, kHeadDim, kBlock, 8, DType::kF32};
  KvCacheShape shape16 = shape;
  shape16.dtype = DType::kBF16;
  EXPECT_EQ(shape16.BytesPerBlock() * 2, shape.BytesPerBlock());
  KvCache f32(shape), bf16(shape16);
  ThreadPool pool(2);
  PagedAttention attention(&pool, AttentionShape{kHeads, kKvHeads, kHeadDim});

  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t kv_row = kKvHeads * kHeadDim, q_row = kHeads * kHeadDim;
  std::vector<float> k(kLen * kv_row), v(kLen * kv_row), q(kLen * q_row);
  for (float* a : {k.data(), v.data()}) {
    for (int64_t i = 0; i < kLen * kv_row; ++i) a[i] = normal(rng);
  }
  for (float& e : q) e = normal(rng);
  const std::vector<int32_t> table = {5, 0, 7, 2, 3, 6};  // blocks out of order
  std::vector<TokenPlacement> tokens;
  for (int p = 0; p < kLen; ++p) tokens.push_back({p, table.data()});

  attention.Store(bf16, 0, tokens, k.data(), v.data());
  attention.Store(f32, 0, tokens, Rounded(k).data(), Rounded(v).data());
  for (int p = 0; p < kLen; ++p) {
    const uint16_t* kb = bf16.KeyBf16(0, table[p / kBlock], p % kBlock);
    for (int64_t i = 0; i < kv_row; ++i) ASSERT_EQ(kb[i], F32ToBf16(k[p * kv_row + i])) << p << " " << i;
  }

  std::vector<float> out16(kLen * q_row), out32(kLen * q_row);
  attention.Attend(bf16, 0, tokens, q.data(), out16.data());
  const std::vector<float> q_as_multiplied = UsesBf16Activations(DType::kBF16) ? Rounded(q) : q;
  attention.Attend(f32, 0, tokens, q_as_multiplied.data(), out32.data());
  double max_err = 0;
  for (size_t i = 0; i < out16.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out16[i]));
    max_err = std::max(max_err, std::fabs(double{out16[i]} - out32[i]));
  }
  EXPECT_LT(max_err, 1e-4) << "kernels " << MatMulKernelName();
}

// A prompt's tokens attended in one step (query blocks that read each key and value once for
// several queries) give every token exactly what attending it alone gives, in a batch that
// also holds another sequence's decode token; and both match a float64 softmax(q·Kᵀ/√d)·V.
TEST(PagedAttention, QueryBlocksEqualOneTokenAtATimeAndFloat64) {
  constexpr int kHeads = 4, kKvHeads = 2, kHeadDim = 40, kBlock = 4, kLen = 18, kOtherLen = 9;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    KvCache cache(KvCacheShape{1, kKvHeads, kHeadDim, kBlock, 16, dtype});
    ThreadPool pool(2);
    PagedAttention attention(&pool, AttentionShape{kHeads, kKvHeads, kHeadDim});
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t kv_row = kKvHeads * kHeadDim, q_row = kHeads * kHeadDim;
    const std::vector<int32_t> table = {9, 1, 4, 12, 7}, other_table = {3, 0, 11};
    // The other sequence's cache first, then the step: its decode token at position 8, then the
    // prompt's 18 tokens (blocks of 4, 4, 4, 4, 2).
    std::vector<TokenPlacement> other, step;
    for (int p = 0; p < kOtherLen; ++p) other.push_back({p, other_table.data()});
    step.push_back(other.back());
    for (int p = 0; p < kLen; ++p) step.push_back({p, table.data()});
    const auto random = [&](int64_t n) {
      std::vector<float> a(n);
      for (float& e : a) e = normal(rng);
      return a;
    };
    const std::vector<float> ko = random(kOtherLen * kv_row), vo = random(kOtherLen * kv_row);
    const std::vector<float> k = random(kLen * kv_row), v = random(kLen * kv_row);
    const std::vector<float> q = random((kLen + 1) * q_row);
    attention.Store(cache, 0, other, ko.data(), vo.data());
    attention.Store(cache, 0, std::vector<TokenPlacement>(step.begin() + 1, step.end()), k.data(), v.data());

    std::vector<float> together((kLen + 1) * q_row), alone((kLen + 1) * q_row);
    attention.Attend(cache, 0, step, q.data(), together.data());
    for (size_t t = 0; t < step.size(); ++t) {
      attention.Attend(cache, 0, {step[t]}, &q[t * q_row], &alone[t * q_row]);
    }
    ASSERT_EQ(std::memcmp(together.data(), alone.data(), together.size() * sizeof(float)), 0) << DTypeName(dtype);

    // Float64 over the values the cache holds (bf16-rounded for a bf16 cache), query as given.
    const bool round = dtype == DType::kBF16;
    const std::vector<float> kc = round ? Rounded(k) : k, vc = round ? Rounded(v) : v;
    double max_err = 0;
    for (int t = 0; t < kLen; ++t) {
      for (int h = 0; h < kHeads; ++h) {
        const int g = h / (kHeads / kKvHeads);
        const float* qh = &q[(t + 1) * q_row + h * kHeadDim];
        std::vector<double> w(t + 1);
        double max_s = -INFINITY, sum = 0;
        for (int p = 0; p <= t; ++p) {
          double d = 0;
          for (int i = 0; i < kHeadDim; ++i) d += double{qh[i]} * kc[p * kv_row + g * kHeadDim + i];
          w[p] = d / std::sqrt(double{kHeadDim});
          max_s = std::max(max_s, w[p]);
        }
        for (double& e : w) sum += e = std::exp(e - max_s);
        for (int i = 0; i < kHeadDim; ++i) {
          double o = 0;
          for (int p = 0; p <= t; ++p) o += w[p] / sum * vc[p * kv_row + g * kHeadDim + i];
          max_err = std::max(max_err, std::fabs(o - together[(t + 1) * q_row + h * kHeadDim + i]));
        }
      }
    }
    // A bf16-by-bf16 kernel set multiplies the query rounded to bf16: scores off by ~2^-8 relative.
    EXPECT_LT(max_err, round && UsesBf16Activations(DType::kBF16) ? 3e-2 : 1e-4) << DTypeName(dtype);
  }
}

}  // namespace
}  // namespace moeserve
