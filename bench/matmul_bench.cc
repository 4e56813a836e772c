// Single-thread MatMulRows throughput of the active kernel set, row-major against panel layout
// (panel_layout.h) in the same process, on a bf16 or int8 matrix shaped like DECO-0.1B's LM
// head (73448 × 768, streamed from memory) or a smaller one (--rows 512: stays in cache), at
// several token counts. Median of --runs, the two layouts alternating run by run; GMAC/s =
// multiply-adds per second, GB/s = weight bytes per second.
//   build/bench/matmul_bench [--rows 73448] [--dtype bf16|int8] [--tokens 1,4,16,64] [--runs 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_pack.h"

ABSL_FLAG(int64_t, rows, 73448, "weight rows (73448: the LM head; 512: cache-resident)");
ABSL_FLAG(int64_t, cols, 768, "weight columns");
ABSL_FLAG(std::string, dtype, "bf16", "weight dtype: bf16 or int8");
ABSL_FLAG(std::string, tokens, "1,4,16,64", "token counts");
ABSL_FLAG(int, runs, 5, "timed runs per token count and layout (the median is reported)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace moeserve;
  const int64_t rows = absl::GetFlag(FLAGS_rows), cols = absl::GetFlag(FLAGS_cols);
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  const bool int8 = absl::GetFlag(FLAGS_dtype) == "int8";
  const DType dtype = int8 ? DType::kI8 : DType::kBF16;
  std::vector<uint16_t> w16;
  std::vector<int8_t> w8;
  std::vector<float> scales(static_cast<size_t>(rows), 0.01f);
  WeightMatrix row_major{dtype, rows, cols, cols, nullptr, nullptr};
  if (int8) {
    w8.resize(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < w8.size(); ++i) w8[i] = static_cast<int8_t>(static_cast<int>(i % 251) - 125);
    row_major.data = w8.data();
    row_major.scales = scales.data();
  } else {
    w16.resize(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < w16.size(); ++i) w16[i] = F32ToBf16(0.001f * static_cast<float>(i % 997) - 0.5f);
    row_major.data = w16.data();
  }
  PanelStorage storage;
  const bool panels = UsesPanels(dtype);
  const WeightMatrix packed = panels ? PackPanels(row_major, storage) : row_major;
  std::printf("kernels %s, %s %lld x %lld, 1 thread%s\n", MatMulKernelName(), int8 ? "int8" : "bf16",
              static_cast<long long>(rows), static_cast<long long>(cols),
              panels ? "" : " (no panel kernels for this dtype: both columns row-major)");
  std::printf("tokens | row-major ms  GMAC/s  GB/s | panels ms  GMAC/s  GB/s | panels / row-major\n");
  const double bytes = static_cast<double>(rows * cols * DTypeSize(dtype));
  for (absl::string_view field : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int nt = 0;
    if (!absl::SimpleAtoi(field, &nt) || nt < 1) continue;
    std::vector<float> x(static_cast<size_t>(nt * cols)), y(static_cast<size_t>(nt * rows));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * static_cast<float>(i % 13) - 0.06f;
    // Enough repetitions for ~1e9 multiply-adds per timed run.
    const int reps = static_cast<int>(std::max<int64_t>(1, int64_t{1000000000} / (rows * cols * nt)));
    std::vector<double> seconds[2];
    for (int run = 0; run <= runs; ++run) {  // run 0 warms up
      for (int layout = 0; layout < 2; ++layout) {
        const WeightMatrix& m = layout == 0 ? row_major : packed;
        const auto start = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; ++r) MatMulRows(m, x.data(), cols, nt, y.data(), rows, 0, rows, false);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps;
        if (run > 0) seconds[layout].push_back(s);
      }
    }
    double med[2];
    for (int layout = 0; layout < 2; ++layout) {
      std::sort(seconds[layout].begin(), seconds[layout].end());
      med[layout] = seconds[layout][seconds[layout].size() / 2];
    }
    const double macs = static_cast<double>(rows * cols * nt);
    std::printf("%6d | %9.3f %7.2f %6.2f | %9.3f %7.2f %6.2f | %.2fx\n", nt, 1e3 * med[0], macs / med[0] / 1e9,
                bytes / med[0] / 1e9, 1e3 * med[1], macs / med[1] / 1e9, bytes / med[1] / 1e9, med[0] / med[1]);
  }
  return 0;
}
