// The CPU matrix kernels: every compiled kernel set the CPU can run, every weight type,
// against a float64 reference; a token's result independent of the batch it is in; the f16
// and int8 conversions.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/cpu/kernels.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"
#include "tests/engine/test_matrix.h"

namespace moeserve {
namespace {

constexpr DType kAllTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI8};

// x as the engine-level paths multiply it with `weights`: rounded to bf16 where
// UsesBf16Activations says so, else unchanged.
float AsMultiplied(float x, DType weights) {
  return UsesBf16Activations(weights) ? Bf16ToF32(F32ToBf16(x)) : x;
}

TEST(MatMulKernels, EverySetAndTypeMatchesFloat64) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    for (DType dtype : kAllTypes) {
      for (int64_t cols : {1, 7, 16, 37, 64, 200, 768}) {
        const TestMatrix m = MakeMatrix(dtype, 4, cols, rng);
        std::vector<std::vector<float>> x(cpu::kMaxTokens, std::vector<float>(cols));
        for (auto& v : x) {
          for (float& e : v) e = normal(rng);
        }
        const float* xs[cpu::kMaxTokens] = {x[0].data(), x[1].data(), x[2].data(), x[3].data()};
        for (int nt = 1; nt <= cpu::kMaxTokens; ++nt) {
          const int rows = set->rows_per_call[nt];
          ASSERT_GE(rows, 1);
          ASSERT_LE(rows, 4);
          float block[16], single[4];
          set->block[KindOf(dtype)](m.bytes.data(), cols, cols, xs, nt, block);
          for (int r = 0; r < rows; ++r) {
            set->row[KindOf(dtype)](m.bytes.data() + r * cols * DTypeSize(dtype), cols, xs, nt, single);
            for (int t = 0; t < nt; ++t) {
              double ref = 0, mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double raw = dtype == DType::kI8 ? m.exact[r * cols + c] / m.scales[r] : m.exact[r * cols + c];
                ref += raw * x[t][c];
                mag += std::fabs(raw * x[t][c]);
              }
              const std::string where = std::string(set->name) + " " + std::string(DTypeName(dtype)) +
                                        " cols=" + std::to_string(cols) + " nt=" + std::to_string(nt) +
                                        " r=" + std::to_string(r) + " t=" + std::to_string(t);
              EXPECT_NEAR(block[r * nt + t], ref, 1e-5 * mag + 1e-6) << where;
              // The one-row kernel accumulates in the same order as the block kernel.
              EXPECT_EQ(std::memcmp(&block[r * nt + t], &single[t], 4), 0) << where;
            }
          }
        }
      }
    }
  }
}

// Sets with bf16 × bf16 kernels: their block, one-row and segmented kernels against float64
// on the bf16-rounded activations (products of two bf16 are exact in fp32, so only the fp32
// summation differs), and their conversion against F32ToBf16's nearest-even rounding.
TEST(MatMulKernels, Bf16ActivationKernelsMatchFloat64OnRoundedActivations) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int sets_checked = 0;
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    const cpu::Bf16ActivationKernels& k = set->bf16x;
    if (k.block == nullptr) continue;
    ASSERT_NE(k.row, nullptr);
    ASSERT_NE(k.segmented, nullptr);
    ASSERT_NE(k.to_bf16, nullptr);
    ++sets_checked;
    for (int64_t cols : {1, 7, 16, 31, 32, 37, 64, 200, 768}) {
      const TestMatrix m = MakeMatrix(DType::kBF16, 4, cols, rng);
      std::vector<std::vector<float>> x(cpu::kMaxTokens, std::vector<float>(cols));
      std::vector<std::vector<uint16_t>> xb(cpu::kMaxTokens, std::vector<uint16_t>(cols));
      for (int t = 0; t < cpu::kMaxTokens; ++t) {
        for (float& e : x[t]) e = normal(rng);
        k.to_bf16(x[t].data(), cols, xb[t].data());
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(xb[t][c], F32ToBf16(x[t][c])) << "to_bf16 cols=" << cols;
      }
      const uint16_t* xs[cpu::kMaxTokens] = {xb[0].data(), xb[1].data(), xb[2].data(), xb[3].data()};
      for (int nt = 1; nt <= cpu::kMaxTokens; ++nt) {
        const int rows = set->rows_per_call[nt];
        float block[16], single[4];
        k.block(m.bytes.data(), cols, cols, xs, nt, block);
        for (int r = 0; r < rows; ++r) {
          k.row(m.bytes.data() + r * cols * 2, cols, xs, nt, single);
          for (int t = 0; t < nt; ++t) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const double p = double{m.exact[r * cols + c]} * Bf16ToF32(xb[t][c]);
              ref += p;
              mag += std::fabs(p);
            }
            const std::string where = std::string(set->name) + " cols=" + std::to_string(cols) +
                                      " nt=" + std::to_string(nt) + " r=" + std::to_string(r);
            EXPECT_NEAR(block[r * nt + t], ref, 1e-5 * mag + 1e-6) << where;
            EXPECT_EQ(std::memcmp(&block[r * nt + t], &single[t], 4), 0) << where;
          }
        }
      }
      // Segmented: the 4 rows split into two column segments (the second holds the tail).
      const int64_t half = cols / 2;
      const void* w[2] = {m.bytes.data(), m.bytes.data() + half * 2};
      const uint16_t* v[2] = {xb[0].data(), xb[0].data() + half};
      if (half == 0) continue;
      float seg[4] = {0.5f, 0.5f, 0.5f, 0.5f};
      k.segmented(w, v, 2, half, cols, 0, 4, seg, 1);
      for (int r = 0; r < 4; ++r) {
        double ref = 0.5, mag = 0.5;
        for (int64_t c = 0; c < 2 * half; ++c) {
          const double p = double{m.exact[r * cols + c]} * Bf16ToF32(xb[0][c]);
          ref += p;
          mag += std::fabs(p);
        }
        EXPECT_NEAR(seg[r], ref, 1e-5 * mag + 1e-6) << set->name << " segmented cols=" << cols << " r=" << r;
      }
    }
  }
  if (sets_checked == 0) GTEST_SKIP() << "no kernel set with bf16 x bf16 kernels runs on this CPU";
}

// The expert-major down projection of a batch against the per-token segmented kernel: the same
// bits for every token (the engine picks either by batch shape), on row ranges that leave
// partial tiles and row groups, with a token that has no entries; lengths without a kernel
// are declined and leave y alone.
TEST(MatMulKernels, GroupedRowDotsMatchSegmentedBitForBit) {
  if (ActiveKernels().bf16x.grouped == nullptr) GTEST_SKIP() << "the active kernel set has no grouped kernel";
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kExperts = 5, kTokens = 7;
  constexpr int64_t kRows = 45;
  for (int64_t len : {16, 32, 64, 96, 128}) {
    // Expert-major down blocks [E·rows, len] in one matrix: expert e's row r at (e·rows + r)·len.
    const TestMatrix m = MakeMatrix(DType::kBF16, kExperts * kRows, len, rng);
    std::vector<std::vector<int>> token_experts(kTokens);
    for (int t = 0; t < kTokens; ++t) {
      for (int e = 0; e < kExperts; ++e) {
        if (t != 3 && ((t * 7 + e * 3) % 5 < 3 || e == t % kExperts)) token_experts[t].push_back(e);
      }
    }
    ASSERT_TRUE(token_experts[3].empty());
    // Grouped form: entries by expert, tokens ascending within; routing CSR offsets per token.
    std::vector<int32_t> token_offsets = {0}, entry_begin, entry_tokens;
    std::vector<uint16_t> vecs;  // the entries' vectors, contiguous in grouped order
    std::vector<const void*> bases;
    std::vector<std::vector<const uint16_t*>> token_vecs(kTokens);
    std::vector<std::vector<const void*>> token_bases(kTokens);
    for (int t = 0; t < kTokens; ++t) token_offsets.push_back(token_offsets.back() + token_experts[t].size());
    vecs.reserve(kTokens * kExperts * len);  // no reallocation: token_vecs point into it
    for (int e = 0; e < kExperts; ++e) {
      entry_begin.push_back(static_cast<int32_t>(entry_tokens.size()));
      bases.push_back(m.bytes.data() + e * kRows * len * 2);
      for (int t = 0; t < kTokens; ++t) {
        if (std::find(token_experts[t].begin(), token_experts[t].end(), e) == token_experts[t].end()) continue;
        token_vecs[t].push_back(vecs.data() + vecs.size());
        for (int64_t i = 0; i < len; ++i) vecs.push_back(F32ToBf16(normal(rng)));
        entry_tokens.push_back(t);
        token_bases[t].push_back(bases.back());
      }
    }
    entry_begin.push_back(static_cast<int32_t>(entry_tokens.size()));
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, kRows}, {3, 40}, {17, 18}}) {
      std::vector<float> grouped(kTokens * kRows), segmented(kTokens * kRows);
      for (size_t i = 0; i < grouped.size(); ++i) grouped[i] = segmented[i] = normal(rng);
      grouped[3 * kRows + r0] = segmented[3 * kRows + r0] = -0.0f;  // a token without entries keeps even its sign
      const std::vector<float> before = grouped;
      const bool done = GroupedRowDotsBf16(bases.data(), entry_begin.data(), kExperts, entry_tokens.data(), vecs.data(),
                                           token_offsets.data(), kTokens, len, len, grouped.data(), kRows, r0, r1);
      const std::string where =
          "len=" + std::to_string(len) + " rows [" + std::to_string(r0) + ", " + std::to_string(r1) + ")";
      if (len % 32 != 0 || len == 96) {
        EXPECT_FALSE(done) << where;
        EXPECT_EQ(std::memcmp(grouped.data(), before.data(), grouped.size() * 4), 0) << where;
        continue;
      }
      ASSERT_TRUE(done) << where;
      for (int t = 0; t < kTokens; ++t) {
        SegmentedRowDotsBf16(token_bases[t].data(), token_vecs[t].data(), static_cast<int>(token_vecs[t].size()), len,
                             len, &segmented[t * kRows], 1, r0, r1);
      }
      EXPECT_EQ(std::memcmp(grouped.data(), segmented.data(), grouped.size() * 4), 0) << where;
      EXPECT_NE(std::memcmp(grouped.data(), before.data(), grouped.size() * 4), 0) << where;
    }
  }
}

// Attention's weighted sum of value rows, every set and value type, against float64: rows
// strided apart, lengths with and without a tail, an existing output added to.
TEST(MatMulKernels, WeightedRowsMatchFloat64) {
  std::mt19937 rng(19);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (int64_t n : {1, 7, 16, 37, 128, 200}) {
        for (int slots : {1, 5, 17}) {
          const int64_t ld = n + 3;  // rows apart by more than their length, as KV rows of several heads
          const TestMatrix v = MakeMatrix(dtype, slots, ld, rng);
          std::vector<float> w(slots), out(n);
          for (float& e : w) e = normal(rng);
          for (float& e : out) e = normal(rng);
          std::vector<float> got = out;
          set->weighted_rows[KindOf(dtype)](v.bytes.data(), ld, w.data(), slots, n, got.data());
          for (int64_t i = 0; i < n; ++i) {
            double ref = out[i], mag = std::fabs(out[i]);
            for (int s = 0; s < slots; ++s) {
              ref += double{w[s]} * v.exact[s * ld + i];
              mag += std::fabs(double{w[s]} * v.exact[s * ld + i]);
            }
            EXPECT_NEAR(got[i], ref, 1e-5 * mag + 1e-6) << set->name << " " << DTypeName(dtype) << " n=" << n
                                                        << " slots=" << slots << " i=" << i;
          }
        }
      }
    }
  }
}

// The multi-query weighted sum gives each query exactly what the one-query kernel gives it:
// attention's results must not depend on how many of a prompt's queries were blocked together.
TEST(MatMulKernels, WeightedRowsMultiEqualsOneQueryAtATime) {
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (int64_t n : {1, 7, 16, 37, 128, 200}) {
        for (int nq = 1; nq <= cpu::kMaxWeightedQueries; ++nq) {
          const int slots = 9, ld = static_cast<int>(n) + 5;
          const TestMatrix v = MakeMatrix(dtype, slots, ld, rng);
          std::vector<std::vector<float>> w(nq, std::vector<float>(slots)), single(nq, std::vector<float>(n));
          for (int q = 0; q < nq; ++q) {
            for (float& e : w[q]) e = normal(rng);
            for (float& e : single[q]) e = normal(rng);
          }
          std::vector<std::vector<float>> multi = single;
          const float* weights[cpu::kMaxWeightedQueries];
          float* outs[cpu::kMaxWeightedQueries];
          for (int q = 0; q < nq; ++q) {
            weights[q] = w[q].data();
            outs[q] = multi[q].data();
            set->weighted_rows[KindOf(dtype)](v.bytes.data(), ld, w[q].data(), slots, n, single[q].data());
          }
          set->weighted_rows_multi[KindOf(dtype)](v.bytes.data(), ld, weights, nq, slots, n, outs);
          for (int q = 0; q < nq; ++q) {
            EXPECT_EQ(std::memcmp(multi[q].data(), single[q].data(), n * sizeof(float)), 0)
                << set->name << " " << DTypeName(dtype) << " n=" << n << " nq=" << nq << " q=" << q;
          }
        }
      }
    }
  }
}

// Attention's softmax against float64 on the same scaled scores: relative error within a few
// fp32 ulp (the polynomial exp's 2 ulp plus the argument's and normalising roundings), exactly
// exp(0) = 1 before normalising at the maximum, underflow to 0, and every row length's tail.
TEST(MatMulKernels, SoftmaxMatchesFloat64) {
  std::mt19937 rng(31);
  std::normal_distribution<float> normal(0.0f, 6.0f);
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    for (int64_t n : {1, 2, 15, 16, 17, 33, 100, 512, 1031}) {
      std::vector<float> s(n);
      for (float& v : s) v = normal(rng);
      // One score 106 (scaled) below the largest: its e^x would be subnormal, so it is 0.
      if (n > 3) s[n / 2] = -600.0f, s[1] = 600.0f;
      const float scale = 0.0883883476f;                // 1/sqrt(128)
      std::vector<double> ref(n);
      double top = -INFINITY, sum = 0;
      for (int64_t i = 0; i < n; ++i) top = std::max(top, double{s[i] * scale});
      for (int64_t i = 0; i < n; ++i) sum += ref[i] = std::exp(double{s[i] * scale} - top);
      std::vector<float> got = s;
      set->softmax(got.data(), n, scale);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        // Plus the fp32 rounding of the argument s·scale − max, which moves e^x by |x|·2^-24.
        const double want = ref[i] / sum, x = double{s[i] * scale} - top;
        ASSERT_NEAR(got[i], want, (6e-7 + 6e-8 * std::fabs(x)) * want + 1e-30)
            << set->name << " n=" << n << " i=" << i;
        total += got[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-6) << set->name << " n=" << n;
      if (n > 3) {
        EXPECT_EQ(got[n / 2], 0.0f) << set->name << " n=" << n;
      }
    }
    // The maximum's exp is exactly 1: a row of equal scores gives exactly 1/n each.
    std::vector<float> flat(20, 3.25f);
    set->softmax(flat.data(), 20, 1.0f);
    for (float v : flat) EXPECT_EQ(v, 1.0f / 20) << set->name;
  }
}

// Every runnable set's elementwise activation (`pick` chooses it) on normal(0, sigma) rows of
// every tail length, with `specials` at the front, against the float64 `want(x)` within
// `tolerance(x, want)`; returns the specials' results per set, for exact checks.
template <class Pick, class Want, class Tolerance>
std::vector<std::vector<float>> ExpectActivationMatches(Pick pick, float sigma, const std::vector<float>& specials,
                                                        Want want, Tolerance tolerance, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<std::vector<float>> special_results;
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    for (int64_t n : {1, 15, 16, 17, 64, 4000}) {
      std::vector<float> v(n);
      for (float& x : v) x = normal(rng);
      const bool with_specials = n >= static_cast<int64_t>(specials.size()) + 1;
      if (with_specials) std::copy(specials.begin(), specials.end(), v.begin());
      std::vector<float> got = v;
      pick(*set)(got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double w = want(double{v[i]});
        EXPECT_NEAR(got[i], w, tolerance(double{v[i]}, w)) << set->name << " n=" << n << " x=" << v[i];
      }
      if (with_specials && n == 17) special_results.emplace_back(got.begin(), got.begin() + specials.size());
    }
  }
  return special_results;
}

// SiLU against float64 x·σ(x): relative error within a few fp32 ulp (the exp's 2 ulp, the sum
// and the division) over the range activations take, and the far ends (x → x above, x → −0
// below, 0 at 0).
TEST(MatMulKernels, SiluMatchesFloat64) {
  const auto results = ExpectActivationMatches(
      [](const cpu::KernelSet& k) { return k.silu; }, 8.0f, {0.0f, 200.0f, -200.0f, -1e-30f},
      [](double x) { return x / (1.0 + std::exp(-x)); },
      [](double, double want) { return 6e-7 * std::fabs(want) + 1e-38; }, 32);
  ASSERT_FALSE(results.empty());
  for (const std::vector<float>& r : results) {
    EXPECT_EQ(r[0], 0.0f);
    EXPECT_EQ(r[1], 200.0f);
  }
}

// The exact-erf GELU against float64 x·erfc(−x/√2)/2: relative error within a few fp32 ulp,
// plus the fp32 rounding of z² in the exponent, which moves erfc by about z²·2^-24 far below
// zero (where the result is tiny); 0 at 0, x far above, −0 far below.
TEST(MatMulKernels, GeluMatchesFloat64) {
  const auto results = ExpectActivationMatches(
      [](const cpu::KernelSet& k) { return k.gelu; }, 3.0f, {0.0f, 30.0f, -30.0f, 1e-20f},
      [](double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); },
      [](double x, double want) { return (1e-6 + 1.5e-7 * x * x) * std::fabs(want) + 1e-37; }, 33);
  ASSERT_FALSE(results.empty());
  for (const std::vector<float>& r : results) {
    EXPECT_EQ(r[0], 0.0f);
    EXPECT_EQ(r[1], 30.0f);
    EXPECT_EQ(r[2], -0.0f);
  }
}

TEST(MatMulKernels, TokenResultDoesNotDependOnTheBatch) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : kAllTypes) {
    const int64_t rows = 45, cols = 200, tokens = 11;
    const TestMatrix m = MakeMatrix(dtype, rows, cols, rng);
    std::vector<float> x(tokens * cols);
    for (float& v : x) v = normal(rng);
    std::vector<float> batched(tokens * rows), alone(tokens * rows), split(tokens * rows);
    MatMulRows(m.View(), x.data(), cols, tokens, batched.data(), rows, 0, rows, false);
    for (int64_t t = 0; t < tokens; ++t) {
      MatMulRows(m.View(), &x[t * cols], cols, 1, &alone[t * rows], rows, 0, rows, false);
    }
    // Rows in uneven ranges (as threads split them) give the same bits too.
    for (int64_t r0 = 0; r0 < rows; r0 += 7) {
      MatMulRows(m.View(), x.data(), cols, tokens, split.data(), rows, r0, std::min<int64_t>(rows, r0 + 7), false);
    }
    EXPECT_EQ(std::memcmp(batched.data(), alone.data(), batched.size() * 4), 0) << DTypeName(dtype);
    EXPECT_EQ(std::memcmp(batched.data(), split.data(), batched.size() * 4), 0) << DTypeName(dtype);
    for (int64_t i = 0; i < rows * tokens; ++i) {
      double ref = 0, mag = 0;
      const int64_t t = i / rows, r = i % rows;
      for (int64_t c = 0; c < cols; ++c) {
        const double p = double{m.exact[r * cols + c]} * AsMultiplied(x[t * cols + c], dtype);
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(batched[i], ref, 1e-5 * mag + 1e-6) << DTypeName(dtype) << " " << i;
    }
  }
}

TEST(MatMulKernels, SegmentedRowDotsWithAndWithoutScales) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : kAllTypes) {
    // Three experts' down slices of a [H, E·d] matrix (BlockFFN layout): row stride E·d.
    const int64_t H = 37, d = 24, E = 3;  // 37 rows: blocks of 16 and single rows
    const TestMatrix m = MakeMatrix(dtype, H, E * d, rng);
    std::vector<std::vector<float>> h(E, std::vector<float>(d));
    for (auto& v : h) {
      for (float& e : v) e = normal(rng);
    }
    const WeightMatrix view = m.View();
    const void* bases[E];
    const float* scales[E];
    const float* vecs[E];
    for (int e = 0; e < E; ++e) {
      const WeightMatrix slice = view.ColBlock(e * d, d);
      bases[e] = slice.data;
      scales[e] = slice.scales;
      vecs[e] = h[e].data();
    }
    std::vector<float> y(H, 0.5f);
    SegmentedRowDots(dtype, bases, dtype == DType::kI8 ? scales : nullptr, vecs, E, d, E * d, y.data(), 1, 0, H);
    for (int64_t r = 0; r < H; ++r) {
      double ref = 0.5, mag = 0.5;
      for (int e = 0; e < E; ++e) {
        for (int64_t j = 0; j < d; ++j) {
          const double p = double{m.exact[r * E * d + e * d + j]} * AsMultiplied(h[e][j], dtype);
          ref += p;
          mag += std::fabs(p);
        }
      }
      EXPECT_NEAR(y[r], ref, 1e-5 * mag) << DTypeName(dtype) << " row " << r;
    }
  }
}

TEST(Conversions, F16RoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
      continue;
    }
    ASSERT_EQ(F32ToF16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Conversions, F16RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(F32ToF16(1.0f + 0.00048828125f), 0x3c00u);        // halfway to the next half: even
  EXPECT_EQ(F32ToF16(1.0f + 3 * 0.00048828125f), 0x3c02u);    // halfway, rounds up to even
  EXPECT_EQ(F32ToF16(1.0f + 0.0006f), 0x3c01u);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bffu);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00u);  // rounds past the largest half
  EXPECT_EQ(F32ToF16(-1e9f), 0xfc00u);
  EXPECT_EQ(F32ToF16(1e-9f), 0x0000u);
  EXPECT_EQ(F32ToF16(5.9604644775390625e-8f), 0x0001u);  // smallest subnormal
}

TEST(Conversions, Int8RowQuantisationIsWithinHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> row(513);
  for (float& v : row) v = normal(rng);
  std::vector<int8_t> q(row.size());
  const float scale = QuantizeRowInt8(row.data(), static_cast<int64_t>(row.size()), q.data());
  float max_abs = 0;
  for (float v : row) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_FLOAT_EQ(scale, max_abs / 127.0f);
  for (size_t i = 0; i < row.size(); ++i) {
    EXPECT_LE(std::fabs(q[i] * scale - row[i]), 0.5f * scale * (1 + 1e-5f)) << i;
    EXPECT_GE(q[i], -127);
  }
  std::vector<float> zeros(9, 0.0f);
  std::vector<int8_t> qz(9, 1);
  EXPECT_EQ(QuantizeRowInt8(zeros.data(), 9, qz.data()), 0.0f);
  for (int8_t v : qz) EXPECT_EQ(v, 0);
}

}  // namespace
}  // namespace moeserve
