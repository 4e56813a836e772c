// Single-thread MatMulRows throughput of the active kernel set on a bf16 matrix shaped like
// DECO-0.1B's LM head (73448 × 768, streamed from memory) or a smaller one (--rows 512: stays
// in cache), at 1, 4 and 16 tokens. Median of --runs; GMAC/s = multiply-adds per second.
//   build/bench/matmul_bench [--rows 73448] [--runs 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/kernels/cpu/matmul.h"

ABSL_FLAG(int64_t, rows, 73448, "weight rows (73448: the LM head; 512: cache-resident)");
ABSL_FLAG(int64_t, cols, 768, "weight columns");
ABSL_FLAG(int, runs, 5, "timed runs per token count (the median is reported)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace moeserve;
  const int64_t rows = absl::GetFlag(FLAGS_rows), cols = absl::GetFlag(FLAGS_cols);
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = F32ToBf16(0.001f * static_cast<float>(i % 997) - 0.5f);
  const WeightMatrix m{DType::kBF16, rows, cols, cols, w.data(), nullptr};
  std::printf("kernels %s, bf16 %lld x %lld, 1 thread\n", MatMulKernelName(), static_cast<long long>(rows),
              static_cast<long long>(cols));
  for (int nt : {1, 4, 16}) {
    std::vector<float> x(static_cast<size_t>(nt * cols), 0.01f), y(static_cast<size_t>(nt * rows));
    // Enough repetitions for ~1e9 multiply-adds per timed run.
    const int reps = static_cast<int>(std::max<int64_t>(1, int64_t{1000000000} / (rows * cols * nt)));
    std::vector<double> seconds;
    for (int run = 0; run <= runs; ++run) {  // run 0 warms up
      const auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) MatMulRows(m, x.data(), cols, nt, y.data(), rows, 0, rows, false);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps;
      if (run > 0) seconds.push_back(s);
    }
    std::sort(seconds.begin(), seconds.end());
    const double s = seconds[seconds.size() / 2];
    std::printf("tokens %2d: %8.3f ms per pass  %6.2f GMAC/s  %6.2f GB/s of weights\n", nt, 1e3 * s,
                static_cast<double>(rows * cols * nt) / s / 1e9, static_cast<double>(rows * cols * 2) / s / 1e9);
  }
  return 0;
}
