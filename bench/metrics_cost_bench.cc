// What the metrics cost per engine step, measured directly: ServingMetrics' observer calls for
// one decode step of DECO-0.1B (routing of every MoE layer, per-layer times, the step report,
// state, one inter-token latency per sequence) at batch 1 and 16, in µs per step, and the same
// process's engine step time at that batch for the ratio; and what one scrape costs (collecting
// and serialising every series, as the exposer does per Prometheus request). End-to-end on/off comparisons on a
// 2-vCPU VM are noisier (±5 %) than the 2 % being judged; this isolates the metrics' own work.
//   build/bench/metrics_cost_bench --model build/models/deco-0.1B-bf16-a20
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "prometheus/text_serializer.h"
#include "engine/engine.h"
#include "engine/forward_batch.h"
#include "server/server_config.h"
#include "server/serving_metrics.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(int, steps, 2000, "observed steps per batch size");
ABSL_FLAG(double, activation, 0.215, "fraction of experts active per token in the synthetic routing");

namespace moeserve {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
  return 1;
}

Routing SyntheticRouting(int tokens, int experts, double activation, std::mt19937& rng) {
  std::bernoulli_distribution active(activation);
  Routing r;
  for (int t = 0; t < tokens; ++t) {
    int n = 0;
    for (int e = 0; e < experts; ++e) {
      if (active(rng)) r.Add(e, 0.1f, true), ++n;
    }
    r.EndToken(n);
  }
  return r;
}

// Median engine decode step (ms) at `batch` sequences of a 32-token context.
double EngineStepMs(Engine& engine, int batch) {
  std::vector<std::vector<int32_t>> tables(batch), tokens(batch);
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < 6; ++i) tables[b].push_back(b * 6 + i);
    tokens[b].assign(32, 1);
  }
  ForwardOutput out;
  for (int b = 0; b < batch; ++b) {
    ForwardBatch prefill;
    prefill.chunks.push_back({tokens[b], 0, tables[b], LogitsMode::kLast, ExpertBudget{}});
    if (!engine.Forward(prefill, &out).ok()) return -1;
  }
  std::vector<double> ms;
  for (int step = 0; step < 16; ++step) {
    ForwardBatch batch_step;
    for (int b = 0; b < batch; ++b) {
      tokens[b].push_back(2);
      batch_step.chunks.push_back({std::span<const int32_t>(&tokens[b].back(), 1),
                                   static_cast<int32_t>(tokens[b].size() - 1), tables[b], LogitsMode::kLast,
                                   ExpertBudget{}});
    }
    const auto start = std::chrono::steady_clock::now();
    if (!engine.Forward(batch_step, &out).ok()) return -1;
    ms.push_back(1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int Main() {
  const std::string model = absl::GetFlag(FLAGS_model);
  auto config = ParseServerConfig("", "bench", {"model.path=" + model, "metrics.listen=127.0.0.1:0"});
  if (!config.ok()) return Fail(config.status());
  EngineOptions opt;
  opt.model_dir = model;
  opt.compute_dtype = DType::kBF16;
  opt.num_threads = 2;
  opt.kv_num_blocks = 16 * 6;
  auto engine = Engine::Create(opt);
  if (!engine.ok()) return Fail(engine.status());
  auto metrics = ServingMetrics::Create(*config, **engine);
  if (!metrics.ok()) return Fail(metrics.status());
  ServingMetrics& m = **metrics;
  const EngineInfo& info = (*engine)->info();
  const int layers = info.num_layers, experts = info.num_experts;
  std::mt19937 rng(1);
  std::printf("model %s: %d layers, %d experts; %d observed steps per batch\n", model.c_str(), layers, experts,
              absl::GetFlag(FLAGS_steps));
  for (int batch : {1, 16}) {
    const Routing routing = SyntheticRouting(batch, experts, absl::GetFlag(FLAGS_activation), rng);
    const int steps = absl::GetFlag(FLAGS_steps);
    const auto start = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s) {
      for (int l = 0; l < layers; ++l) {
        m.OnLayerTime(l, LayerOp::kAttention, 3e-4);
        if (l > 0) m.OnRouting(l, routing);  // layer 0 is dense in DECO-0.1B
        m.OnLayerTime(l, l > 0 ? LayerOp::kMoe : LayerOp::kFfn, 3e-4);
      }
      StepReport report;
      report.seconds = 0.02;
      report.batch_tokens = batch;
      report.generated_tokens = batch;
      report.running = batch;
      m.OnStep(report);
      m.OnState(batch, 0, 0.1);
      for (int b = 0; b < batch; ++b) m.OnInterToken(0.02);
    }
    const double us = 1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / steps;
    (*engine)->set_observer(nullptr);
    const double step_ms = EngineStepMs(**engine, batch);
    std::printf("batch %2d: metrics %.1f us per step; engine step %.2f ms (median of 16) -> %.3f %%\n", batch, us,
                step_ms, 100.0 * us / (1e3 * step_ms));
  }
  // One scrape: collect and serialise the registry (the exposer's work per request).
  constexpr int kScrapes = 50;
  size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kScrapes; ++i) bytes = prometheus::TextSerializer().Serialize(m.registry().Collect()).size();
  const double scrape_ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                           kScrapes;
  std::printf("scrape: %.2f ms of one thread per scrape (%zu bytes of exposition) -> %.2f %% of one core at a "
              "1 s scrape interval\n",
              scrape_ms, bytes, scrape_ms / 10.0);
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return moeserve::Main();
}
