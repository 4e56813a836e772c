// The routed-expert part of a MoE layer alone (ExpertExecutor::Run: grouping, up-projection
// with NormSiLU, down projection), on synthetic bf16 banks of DECO-0.1B's shape (42 experts of
// width 64, hidden 768; 15 layers, 120 MB, so weights come from memory as in decode). Each
// token picks each expert with probability --activation. For batch sizes 1, 4, 16 and 64 it
// times both down-projection orders in alternation (per token, expert-major; same bits), and
// reports µs per layer, the expert union, and the union's bytes per second; then the same
// banks packed in panels (panel_layout.h, what the engine runs where the kernels have panels).
//   build/bench/moe_layer_bench [--runs 7] [--threads 2] [--activation 0.2]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/kernels/cpu/panel_pack.h"
#include "engine/kernels/cpu/thread_pool.h"
#include "engine/dtype.h"
#include "engine/moe/expert_bank.h"
#include "engine/moe/expert_executor.h"
#include "engine/moe/routing.h"

ABSL_FLAG(int, runs, 7, "timed runs per configuration (the median is reported)");
ABSL_FLAG(int, threads, 2, "threads");
ABSL_FLAG(double, activation, 0.2, "probability that a token picks an expert");
ABSL_FLAG(int, layers, 15, "layers of distinct weights cycled through");
ABSL_FLAG(int, batch, 0, "one batch size only, any (0: 1, 4, 16 and 64)");

namespace moeserve {
namespace {

constexpr int kExperts = 42;
constexpr int64_t kWidth = 64, kHidden = 768;

struct Layer {
  std::vector<uint16_t> up_storage, down_storage;
  uint16_t *up = nullptr, *down = nullptr;  // 64-byte aligned within the storage
  ExpertBank bank;
  ExpertBank packed;  // up and down in panels, where the kernel set has them
  PanelStorage up_panels, down_panels;
};

uint16_t* Aligned(std::vector<uint16_t>& v, size_t n) {
  v.resize(n + 32);
  uint16_t* p = v.data();
  const size_t off = (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64 / 2;
  return p + off;
}

void MakeLayer(std::mt19937& rng, Layer& l) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const size_t n = kExperts * kWidth * kHidden;
  l.up = Aligned(l.up_storage, n);
  l.down = Aligned(l.down_storage, n);
  for (size_t i = 0; i < n; ++i) l.up[i] = F32ToBf16(normal(rng));
  for (size_t i = 0; i < n; ++i) l.down[i] = F32ToBf16(normal(rng));
  ExpertBank& b = l.bank;
  b.num_experts = kExperts;
  b.width = kWidth;
  b.hidden = kHidden;
  b.up = WeightMatrix{DType::kBF16, kExperts * kWidth, kHidden, kHidden, l.up, nullptr};
  b.down = WeightMatrix{DType::kBF16, kExperts * kHidden, kWidth, kWidth, l.down, nullptr};
  b.down_stacked = true;  // expert-major, as the loader stores BlockFFN down projections
  b.act = ExpertAct::kNormSilu;
  b.act_norm_weight.assign(kWidth, 1.0f);
  b.mean_vector.assign(kHidden, 0.001f);
  l.packed = b;
  if (UsesPanels(DType::kBF16)) {
    l.packed.up = PackPanels(b.up, l.up_panels);
    l.packed.down = PackPanels(b.down, l.down_panels);
  }
}

Routing Route(std::mt19937& rng, int tokens, double p) {
  std::bernoulli_distribution pick(p);
  Routing r;
  for (int t = 0; t < tokens; ++t) {
    int count = 0;
    for (int e = 0; e < kExperts; ++e) {
      if (pick(rng)) {
        r.Add(e, 0.5f, true);
        ++count;
      }
    }
    r.EndToken(count);
  }
  return r;
}

int Main() {
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  const int num_layers = std::max(1, absl::GetFlag(FLAGS_layers));
  ThreadPool pool(absl::GetFlag(FLAGS_threads));
  std::mt19937 rng(7);
  std::vector<Layer> layers(num_layers);
  for (Layer& l : layers) MakeLayer(rng, l);
  const double expert_bytes = 2.0 * kWidth * kHidden * 2;
  std::printf("kernels %s, %d threads, %d layers, activation %.2f; us per layer (median of %d)\n", MatMulKernelName(),
              pool.num_threads(), num_layers, absl::GetFlag(FLAGS_activation), runs);
  std::printf("batch  union  per-token us  GB/s   expert-major us  GB/s   ratio   panels us  GB/s   ratio\n");
  std::vector<int> batches = {1, 4, 16, 64};
  if (absl::GetFlag(FLAGS_batch) > 0) batches = {absl::GetFlag(FLAGS_batch)};
  for (int tokens : batches) {
    std::vector<Routing> routings;
    for (int i = 0; i < num_layers; ++i) routings.push_back(Route(rng, tokens, absl::GetFlag(FLAGS_activation)));
    std::vector<float> m(tokens * kHidden), y(tokens * kHidden, 0.0f);
    for (float& v : m) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
    double union_sum = 0;
    std::vector<double> us[3];
    ExpertExecutor executor(&pool);
    const int reps = std::max(1, 64 / tokens);  // passes over all layers per timed run
    for (int run = 0; run <= runs; ++run) {     // run 0 warms up
      for (int order = 0; order < 3; ++order) {
        executor.set_down_order(order == 0 ? ExpertExecutor::DownOrder::kPerToken
                                           : ExpertExecutor::DownOrder::kExpertMajor);
        union_sum = 0;
        const auto start = std::chrono::steady_clock::now();
        for (int rep = 0; rep < reps; ++rep) {
          for (int i = 0; i < num_layers; ++i) {
            executor.Run(order == 2 ? layers[i].packed : layers[i].bank, m.data(), tokens, routings[i], y.data());
            union_sum += executor.last_union_size();
          }
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (run > 0) us[order].push_back(1e6 * s / (reps * num_layers));
      }
    }
    const double union_per_layer = union_sum / (reps * num_layers);
    double med[3];
    for (int o = 0; o < 3; ++o) {
      std::sort(us[o].begin(), us[o].end());
      med[o] = us[o][us[o].size() / 2];
    }
    const double bytes = union_per_layer * expert_bytes;
    std::printf("%5d  %5.1f  %12.1f  %5.1f  %15.1f  %5.1f  %5.2f  %10.1f  %5.1f  %5.2f\n", tokens, union_per_layer,
                med[0], bytes / med[0] / 1e3, med[1], bytes / med[1] / 1e3, med[0] / med[1], med[2],
                bytes / med[2] / 1e3, med[0] / med[2]);
  }
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return moeserve::Main();
}
