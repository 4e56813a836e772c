// Matrices packed in panels (panel_layout.h) and the panel kernels: the packing keeps every
// value; bf16 results match float64 on the bf16-rounded activations and int8 results match the
// exact integer sum of the quantised activations; a token's bits do not depend on the batch,
// the row range or the parallel region it is computed in, nor on preparing the activations
// across a pool. Skipped where the active kernel set has no panel kernels (then nothing is
// packed). Every runnable set's bf16 and int8 panel kernels (on an AMX machine both the AVX-512
// and the AMX ones) are also called directly over all their tile shapes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "engine/kernels/cpu/kernels.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_layout.h"
#include "engine/kernels/cpu/panel_matmul.h"
#include "engine/kernels/cpu/panel_pack.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/engine/test_matrix.h"

namespace moeserve {
namespace {

constexpr DType kPanelTypes[] = {DType::kBF16, DType::kI8};

std::vector<float> RandomActivations(int64_t tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(tokens * cols);
  for (float& v : x) v = normal(rng);
  return x;
}

// The int8 kernels' activation quantisation: q = round(x · 127 / max|x|), scale max|x| / 127.
std::vector<double> QuantisedRow(const float* x, int64_t n) {
  float max_abs = 0.0f;
  for (int64_t c = 0; c < n; ++c) max_abs = std::max(max_abs, std::fabs(x[c]));
  std::vector<double> q(n, 0.0);
  if (max_abs == 0.0f) return q;
  for (int64_t c = 0; c < n; ++c) q[c] = std::nearbyint(x[c] * (127.0f / max_abs)) * double{max_abs / 127.0f};
  return q;
}

TEST(PanelMatMul, PackingKeepsEveryValueAndRowBlocksStartAtTheirPanel) {
  std::mt19937 rng(11);
  for (DType dtype : kPanelTypes) {
    for (int64_t cols : {1, 3, 32, 77}) {
      const TestMatrix m = MakeMatrix(dtype, 37, cols, rng);
      PanelStorage storage;
      const WeightMatrix p = PackPanels(m.View(), storage);
      ASSERT_TRUE(p.panels);
      const WeightMatrix block = p.RowBlock(16, 21);
      std::vector<float> row(cols), row_block(cols);
      for (int64_t r = 0; r < m.rows; ++r) {
        p.RowToF32(r, row.data());
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[c], m.exact[r * cols + c]) << r << "," << c;
        if (r < 16) continue;
        block.RowToF32(r - 16, row_block.data());
        ASSERT_EQ(0, std::memcmp(row.data(), row_block.data(), cols * sizeof(float)));
      }
    }
  }
}

TEST(PanelMatMul, ResultsMatchFloat64OnTheActivationsTheKernelsSee) {
  std::mt19937 rng(12);
  for (DType dtype : kPanelTypes) {
    if (!UsesPanels(dtype)) GTEST_SKIP() << "no panel kernels in " << MatMulKernelName();
    for (int64_t rows : {1, 15, 16, 17, 70}) {
      for (int64_t cols : {1, 2, 5, 64, 203}) {
        const TestMatrix m = MakeMatrix(dtype, rows, cols, rng);
        PanelStorage storage;
        const WeightMatrix p = PackPanels(m.View(), storage);
        const int64_t tokens = 13;
        const std::vector<float> x = RandomActivations(tokens, cols, rng);
        std::vector<float> y(tokens * rows);
        MatMulRows(p, x.data(), cols, tokens, y.data(), rows, 0, rows, false);
        for (int64_t t = 0; t < tokens; ++t) {
          std::vector<double> seen(cols);
          if (dtype == DType::kI8) {
            seen = QuantisedRow(&x[t * cols], cols);
          } else {
            for (int64_t c = 0; c < cols; ++c) seen[c] = Bf16ToF32(F32ToBf16(x[t * cols + c]));
          }
          for (int64_t r = 0; r < rows; ++r) {
            double want = 0, magnitude = 0;
            for (int64_t c = 0; c < cols; ++c) {
              want += double{m.exact[r * cols + c]} * seen[c];
              magnitude += std::fabs(double{m.exact[r * cols + c]} * seen[c]);
            }
            ASSERT_NEAR(y[t * rows + r], want, 1e-5 * magnitude + 1e-6)
                << ComputeDTypeName(dtype) << " rows " << rows << " cols " << cols << " t " << t << " r " << r;
          }
        }
      }
    }
  }
}

// n elements of `storage` from its first 64-byte boundary: panels are 64-byte aligned in the
// engine (PackPanels), and the kernels load them so.
template <class T>
std::span<T> Aligned64(std::vector<T>& storage, size_t n) {
  storage.assign(n + 64 / sizeof(T), T{});
  const size_t skip = (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64 / sizeof(T);
  return std::span<T>(storage.data() + skip, n);
}

// Each runnable set's bf16 panel kernel, called directly: every panel count, token counts up
// to the set's largest (AMX: one tile, several, several and a partial one), group counts with
// and without a partial last step of 16 and over several of AMX's chunks of steps, and
// activation rows further apart than the groups. Results match float64; a token computed
// alone has the bits it has in the full tile.
TEST(PanelKernels, EverySetsBf16KernelMatchesFloat64AndKeepsATokensBitsAcrossTiles) {
  std::mt19937 rng(15);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int sets_tested = 0;
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    const cpu::Bf16PanelFn kernel = set->panels.bf16;
    if (kernel == nullptr) continue;
    ++sets_tested;
    for (int64_t groups : {1, 16, 37, 48, 150}) {
      const int64_t panel_bytes = groups * cpu::kPanelGroupBytes;
      const int64_t x_stride = groups * 2 + 6;
      std::vector<uint16_t> storage;
      const std::span<uint16_t> w = Aligned64(storage, cpu::kMaxPanels * panel_bytes / 2);
      for (uint16_t& v : w) v = F32ToBf16(normal(rng));
      const int max_nt = set->panels.panel_tokens;
      std::vector<uint16_t> x(max_nt * x_stride);
      for (uint16_t& v : x) v = F32ToBf16(normal(rng));
      for (int np = 1; np <= cpu::kMaxPanels; ++np) {
        for (int nt : {1, 3, 16, 40, max_nt}) {
          if (nt > max_nt) continue;
          alignas(64) float out[cpu::kMaxAmxPanelTokens * cpu::kMaxPanelRows];
          kernel(w.data(), panel_bytes, np, groups, x.data(), x_stride, nt, out);
          for (int t = 0; t < nt; ++t) {
            for (int p = 0; p < np; ++p) {
              for (int i = 0; i < cpu::kPanelRows; ++i) {
                double want = 0, magnitude = 0;
                for (int64_t c = 0; c < 2 * groups; ++c) {
                  const int64_t at = cpu::PanelOffset(panel_bytes / 2, 2, p * cpu::kPanelRows + i, c);
                  const double prod = double{Bf16ToF32(w[at])} * Bf16ToF32(x[t * x_stride + c]);
                  want += prod;
                  magnitude += std::fabs(prod);
                }
                const float got = out[t * cpu::kMaxPanelRows + p * cpu::kPanelRows + i];
                ASSERT_NEAR(got, want, 1e-5 * magnitude + 1e-6)
                    << set->name << " groups " << groups << " np " << np << " nt " << nt << " t " << t;
              }
            }
            alignas(64) float alone[cpu::kMaxAmxPanelTokens * cpu::kMaxPanelRows];
            kernel(w.data(), panel_bytes, np, groups, &x[t * x_stride], x_stride, 1, alone);
            ASSERT_EQ(0, std::memcmp(alone, &out[t * cpu::kMaxPanelRows], np * cpu::kPanelRows * sizeof(float)))
                << set->name << " groups " << groups << " np " << np << " nt " << nt << " t " << t;
          }
        }
      }
    }
  }
  if (sets_tested == 0) GTEST_SKIP() << "no kernel set with bf16 panels on this CPU";
}

// Each runnable set's int8 panel kernel, called directly like the bf16 one above: the integer
// sums are exact, so every set (vpdpbusd, AMX's tdpbusd) must give exactly
// (float)(Σ u·w − 128 · row_sum) · row_scale · x_scale, for every tile shape.
TEST(PanelKernels, EverySetsInt8KernelGivesTheExactSumsScaled) {
  std::mt19937 rng(16);
  std::uniform_int_distribution<int> weight(-127, 127), byte(1, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.1f);
  int sets_tested = 0;
  for (const cpu::KernelSet* set : RunnableKernelSets()) {
    const cpu::I8PanelFn kernel = set->panels.i8;
    if (kernel == nullptr) continue;
    ++sets_tested;
    for (int64_t groups : {1, 16, 37, 48, 150}) {
      const int64_t panel_bytes = groups * cpu::kPanelGroupBytes, cols = 4 * groups;
      const int64_t x_stride = cols + 12;
      std::vector<int8_t> storage;
      const std::span<int8_t> w = Aligned64(storage, cpu::kMaxPanels * panel_bytes);
      for (int8_t& v : w) v = static_cast<int8_t>(weight(rng));
      std::vector<int32_t> row_sums(cpu::kMaxPanelRows, 0);
      std::vector<float> row_scales(cpu::kMaxPanelRows);
      for (int64_t r = 0; r < cpu::kMaxPanelRows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          row_sums[r] += w[cpu::PanelOffset(panel_bytes, 4, r, c)];
        }
        row_scales[r] = scale(rng);
      }
      const int max_nt = set->panels.panel_tokens;
      std::vector<uint8_t> x(max_nt * x_stride);
      for (uint8_t& v : x) v = static_cast<uint8_t>(byte(rng));
      std::vector<float> x_scales(max_nt);
      for (float& v : x_scales) v = scale(rng);
      for (int np = 1; np <= cpu::kMaxPanels; ++np) {
        for (int nt : {1, 2, 7, 16, 40, max_nt}) {
          if (nt > max_nt) continue;
          alignas(64) float out[cpu::kMaxAmxPanelTokens * cpu::kMaxPanelRows];
          kernel(w.data(), panel_bytes, np, groups, x.data(), x_stride, nt,
                 cpu::I8PanelScales{row_sums.data(), row_scales.data(), x_scales.data()}, out);
          for (int t = 0; t < nt; ++t) {
            for (int64_t r = 0; r < np * cpu::kPanelRows; ++r) {
              int32_t sum = 0;
              for (int64_t c = 0; c < cols; ++c) {
                sum += int32_t{x[t * x_stride + c]} * w[cpu::PanelOffset(panel_bytes, 4, r, c)];
              }
              const float want = static_cast<float>(sum - 128 * row_sums[r]) * row_scales[r] * x_scales[t];
              ASSERT_EQ(out[t * cpu::kMaxPanelRows + r], want)
                  << set->name << " groups " << groups << " np " << np << " nt " << nt << " t " << t << " r " << r;
            }
          }
        }
      }
    }
  }
  if (sets_tested == 0) GTEST_SKIP() << "no kernel set with int8 panels on this CPU";
}

TEST(PanelMatMul, ATokensBitsDoNotDependOnTheBatchTheRowRangeOrTheParallelRegion) {
  std::mt19937 rng(13);
  ThreadPool pool(2);
  for (DType dtype : kPanelTypes) {
    if (!UsesPanels(dtype)) GTEST_SKIP() << "no panel kernels in " << MatMulKernelName();
    // Several tiles of panels and of tokens; 50 bf16 groups: AMX's last step is partial.
    const int64_t rows = 150, cols = 100, tokens = 19;
    const TestMatrix a = MakeMatrix(dtype, rows, cols, rng), b = MakeMatrix(dtype, 40, cols, rng);
    PanelStorage sa, sb;
    const WeightMatrix pa = PackPanels(a.View(), sa), pb = PackPanels(b.View(), sb);
    const std::vector<float> x = RandomActivations(tokens, cols, rng);
    std::vector<float> batched(tokens * rows), alone(rows), ranged(tokens * rows, 0.0f);
    MatMulRows(pa, x.data(), cols, tokens, batched.data(), rows, 0, rows, false);
    for (int64_t t = 0; t < tokens; ++t) {
      MatMulRows(pa, &x[t * cols], cols, 1, alone.data(), rows, 0, rows, false);
      ASSERT_EQ(0, std::memcmp(alone.data(), &batched[t * rows], rows * sizeof(float))) << "token " << t;
    }
    // Ranges that start and end inside panels, covering the rows once.
    const int64_t bounds[] = {0, 5, 37, 64, 121, rows};
    for (int i = 0; i + 1 < 6; ++i) {
      MatMulRows(pa, x.data(), cols, tokens, ranged.data(), rows, bounds[i], bounds[i + 1], false);
    }
    ASSERT_EQ(0, std::memcmp(ranged.data(), batched.data(), ranged.size() * sizeof(float)));
    // Two jobs on the same input in one parallel region, the second accumulating.
    std::vector<float> ya(tokens * rows), yb(tokens * 40, 1.0f), want_b(tokens * 40);
    const MatMulJob jobs[] = {{&pa, x.data(), cols, ya.data(), rows}, {&pb, x.data(), cols, yb.data(), 40, true}};
    ParallelMatMul(pool, jobs, tokens);
    MatMulRows(pb, x.data(), cols, tokens, want_b.data(), 40, 0, 40, false);
    ASSERT_EQ(0, std::memcmp(ya.data(), batched.data(), ya.size() * sizeof(float)));
    for (size_t i = 0; i < yb.size(); ++i) ASSERT_EQ(yb[i], 1.0f + want_b[i]) << i;
  }
}

// Activations prepared across a pool (a prompt's tokens split in chunks, row_ranges.h) are the
// bytes and scales of the same preparation on one thread.
TEST(PanelMatMul, InputsPreparedAcrossThePoolAreTheSingleThreadBytes) {
  std::mt19937 rng(15);
  ThreadPool pool(3);
  for (DType dtype : kPanelTypes) {
    if (!UsesPanels(dtype)) GTEST_SKIP() << "no panel kernels in " << MatMulKernelName();
    const int64_t tokens = 3000, cols = 101, stride = 120;  // several chunks; a partial last group
    const std::vector<float> x = RandomActivations(tokens, stride, rng);
    PanelInput one, split;
    one.Prepare(dtype, x.data(), stride, tokens, cols);
    const ThreadPool::Stats before = pool.stats();
    split.Prepare(dtype, x.data(), stride, tokens, cols, &pool);
    EXPECT_EQ(pool.stats().regions - before.regions, 1);
    ASSERT_EQ(one.stride(), split.stride());
    for (int64_t t = 0; t < tokens; ++t) {
      if (dtype == DType::kBF16) {
        ASSERT_EQ(0, std::memcmp(one.bf16(t), split.bf16(t), one.stride() * 2)) << "token " << t;
      } else {
        ASSERT_EQ(0, std::memcmp(one.u8(t), split.u8(t), one.stride())) << "token " << t;
        ASSERT_EQ(*one.scales(t), *split.scales(t)) << "token " << t;
      }
    }
  }
}

// The form the expert down projection uses: a group of prepared tokens (from `first_token`
// on) accumulated straight into scattered rows of y, over a row range inside the matrix. Each
// indexed row gets exactly its old value plus the contiguous call's result; other rows and
// columns outside the range stay as they were.
TEST(PanelMatMul, ScatteredRowsAccumulateTheSameBitsAsContiguousRows) {
  std::mt19937 rng(14);
  for (DType dtype : kPanelTypes) {
    if (!UsesPanels(dtype)) GTEST_SKIP() << "no panel kernels in " << MatMulKernelName();
    const int64_t rows = 100, cols = 64, tokens = 15, first = 3, n = 9, out_rows = 12;
    const TestMatrix a = MakeMatrix(dtype, rows, cols, rng);
    PanelStorage storage;
    const WeightMatrix p = PackPanels(a.View(), storage);
    const std::vector<float> x = RandomActivations(tokens, cols, rng);
    PanelInput in;
    in.Prepare(dtype, x.data(), cols, tokens, cols);
    const int64_t r0 = 16, r1 = 85;  // starts on a panel, ends inside one
    std::vector<float> contiguous(n * rows, 0.0f);
    PanelMatMulRows(p, in, first, n, contiguous.data(), rows, r0, r1, false);
    const int32_t index[n] = {7, 0, 11, 2, 9, 4, 10, 1, 5};  // rows 3, 6 and 8 of y untouched
    std::vector<float> y = RandomActivations(out_rows, rows, rng);
    const std::vector<float> before = y;
    PanelMatMulRows(p, in, first, n, y.data(), rows, r0, r1, /*accumulate=*/true, index);
    std::vector<float> want = before;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t r = r0; r < r1; ++r) want[index[i] * rows + r] += contiguous[i * rows + r];
    }
    ASSERT_EQ(0, std::memcmp(want.data(), y.data(), y.size() * sizeof(float))) << DTypeName(dtype);
  }
}

}  // namespace
}  // namespace moeserve
