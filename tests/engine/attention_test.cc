// Paged attention over a bf16 KV cache: the cache stores K and V rounded to bf16, and
// attention over it equals attention over an fp32 cache holding those rounded values (with
// the query rounded too where the kernel set multiplies bf16 by bf16), up to fp32 summation
// order; a bf16 block is half the bytes of an fp32 one.
#include <cmath>
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

}  // namespace
}  // namespace moeserve
