// Matrices packed in panels (panel_layout.h) and the panel kernels: the packing keeps every
// value; bf16 results match float64 on the bf16-rounded activations and int8 results match the
// exact integer sum of the quantised activations; a token's bits do not depend on the batch,
// the row range or the parallel region it is computed in. Skipped where the active kernel set
// has no panel kernels (then nothing is packed).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/cpu/matmul.h"
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

TEST(PanelMatMul, ATokensBitsDoNotDependOnTheBatchTheRowRangeOrTheParallelRegion) {
  std::mt19937 rng(13);
  ThreadPool pool(2);
  for (DType dtype : kPanelTypes) {
    if (!UsesPanels(dtype)) GTEST_SKIP() << "no panel kernels in " << MatMulKernelName();
    const int64_t rows = 150, cols = 96, tokens = 19;  // several tiles of panels and of tokens
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
