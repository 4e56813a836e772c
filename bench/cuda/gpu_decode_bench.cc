// CUDA backend benchmark (issue 7 §5): decode tokens/s at several batch sizes, prefill tokens/s,
// sparse with and without CUDA graphs (MOESERVE_CUDA_GRAPHS=0 for the second engine) and
// --dense-experts in the same process, MoE-layer time (device time between the backend's
// per-layer events), and the HBM roofline fraction for the weight bytes actually read
// (ForwardOutput::weight_bytes_read) against the device's measured copy bandwidth. Prints a
// markdown table with the device name.
//
//   gpu_decode_bench --model DIR [--batches 1,8,32,64] [--prompt_len 32] [--steps 64] [--runs 3]
#include <cuda_runtime.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "engine/engine.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory");
ABSL_FLAG(std::string, batches, "1,8,32,64", "decode batch sizes");
ABSL_FLAG(int, prompt_len, 32, "prompt tokens per sequence (prefill)");
ABSL_FLAG(int, steps, 64, "decode steps timed per run");
ABSL_FLAG(int, runs, 3, "runs per configuration (median reported)");
ABSL_FLAG(int, prefill_tokens, 512, "tokens of the prefill throughput run (one sequence)");

namespace moeserve {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Device-to-device copy bandwidth (read + write bytes / time) over 1 GiB, median of 5.
double DeviceBandwidthGBs() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
  std::vector<double> gbs;
  for (int i = 0; i < 6; ++i) {
    cudaDeviceSynchronize();
    const auto t0 = Clock::now();
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i > 0) gbs.push_back(2.0 * bytes / s / 1e9);
  }
  cudaFree(a);
  cudaFree(b);
  return Median(gbs);
}

class MoeTimer : public EngineObserver {
 public:
  void OnLayerTime(int layer, LayerOp op, double seconds) override {
    if (op == LayerOp::kMoe) moe_seconds += seconds;
  }
  double moe_seconds = 0;
};

struct Result {
  double tokens_per_s = 0, bytes_per_step = 0, moe_ms_per_step = 0;
};

// B sequences of prompt_len tokens, prefilled together, then `steps` greedy decode steps.
Result Decode(Engine& e, int B, int prompt_len, int steps, int runs) {
  const int bs = e.info().kv.block_size;
  const int per_seq = (prompt_len + steps + bs - 1) / bs;
  std::vector<std::vector<int32_t>> tables(B), prompts(B);
  for (int s = 0; s < B; ++s) {
    for (int i = 0; i < per_seq; ++i) tables[s].push_back(s * per_seq + i);
    for (int i = 0; i < prompt_len; ++i) prompts[s].push_back(1 + (s * 131 + i * 17) % 1000);
  }
  std::vector<double> tps, bytes, moe;
  for (int run = 0; run < runs; ++run) {
    ForwardBatch prefill;
    for (int s = 0; s < B; ++s) {
      SequenceChunk c;
      c.tokens = prompts[s];
      c.block_table = tables[s];
      prefill.chunks.push_back(c);
    }
    ForwardOutput out;
    if (!e.Forward(prefill, &out).ok()) return {};
    std::vector<int32_t> next(B);
    auto argmax = [&](const ForwardOutput& o) {
      for (int s = 0; s < B; ++s) {
        const float* l = o.Logits(s);
        next[s] = static_cast<int32_t>(std::max_element(l, l + o.vocab_size) - l);
      }
    };
    argmax(out);
    double step_bytes = 0;
    const auto t0 = Clock::now();
    for (int step = 0; step < steps; ++step) {
      ForwardBatch batch;
      for (int s = 0; s < B; ++s) {
        SequenceChunk c;
        c.tokens = std::span<const int32_t>(&next[s], 1);
        c.start_position = prompt_len + step;
        c.block_table = tables[s];
        batch.chunks.push_back(c);
      }
      if (!e.Forward(batch, &out).ok()) return {};
      step_bytes += static_cast<double>(out.weight_bytes_read);
      argmax(out);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    tps.push_back(static_cast<double>(B) * steps / seconds);
    bytes.push_back(step_bytes / steps);
    // A separate short pass with per-layer timing (synchronises per layer).
    MoeTimer timer;
    e.set_observer(&timer);
    ForwardBatch one;
    for (int s = 0; s < B; ++s) {
      SequenceChunk c;
      c.tokens = std::span<const int32_t>(&next[s], 1);
      c.start_position = prompt_len + steps - 1;
      c.block_table = tables[s];
      one.chunks.push_back(c);
    }
    for (int i = 0; i < 8; ++i) (void)e.Forward(one, &out);
    e.set_observer(nullptr);
    moe.push_back(timer.moe_seconds / 8 * 1e3);
  }
  return {Median(tps), Median(bytes), Median(moe)};
}

double Prefill(Engine& e, int tokens, int runs) {
  const int bs = e.info().kv.block_size;
  std::vector<int32_t> table((tokens + bs - 1) / bs), prompt(tokens);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  for (int i = 0; i < tokens; ++i) prompt[i] = 1 + (i * 29) % 1000;
  std::vector<double> tps;
  for (int run = 0; run < runs + 1; ++run) {
    ForwardBatch b;
    SequenceChunk c;
    c.tokens = prompt;
    c.block_table = table;
    b.chunks.push_back(c);
    ForwardOutput out;
    const auto t0 = Clock::now();
    if (!e.Forward(b, &out).ok()) return 0;
    if (run > 0) tps.push_back(tokens / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Median(tps);
}

int Main() {
  const std::string model = absl::GetFlag(FLAGS_model);
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ','))
    batches.push_back(std::stoi(std::string(b)));
  const int prompt_len = absl::GetFlag(FLAGS_prompt_len), steps = absl::GetFlag(FLAGS_steps);
  const int runs = absl::GetFlag(FLAGS_runs), prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  const int max_b = *std::max_element(batches.begin(), batches.end());
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::cerr << "no CUDA device: the GPU benchmark needs one\n";
    return 1;
  }
  const double bw = DeviceBandwidthGBs();
  std::printf("device: %s (sm_%d%d), measured copy bandwidth %.1f GB/s\nmodel: %s\n\n", prop.name, prop.major,
              prop.minor, bw, model.c_str());
  std::printf("| mode | batch | decode tok/s | MB read / step | roofline steps/s | fraction | MoE ms / step |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  struct Mode {
    const char* name;
    bool dense, graphs;
  };
  for (const Mode& mode : {Mode{"sparse, graphs", false, true}, Mode{"sparse, no graphs", false, false},
                           Mode{"dense-experts, graphs", true, true}}) {
    const bool dense = mode.dense;
    // The backend reads MOESERVE_CUDA_GRAPHS when it is created.
    if (mode.graphs) {
      unsetenv("MOESERVE_CUDA_GRAPHS");
    } else {
      setenv("MOESERVE_CUDA_GRAPHS", "0", 1);
    }
    EngineOptions o;
    o.model_dir = model;
    o.backend = BackendChoice::kCuda;
    o.dense_experts = dense;
    o.kv_block_size = 16;
    o.kv_num_blocks = std::max<int64_t>(int64_t{max_b} * ((prompt_len + steps + 15) / 16), (prefill_tokens + 15) / 16);
    auto e = Engine::Create(o);
    if (!e.ok()) {
      std::cerr << e.status() << "\n";
      return 1;
    }
    for (int B : batches) {
      const Result r = Decode(**e, B, prompt_len, steps, runs);
      const double roofline = bw * 1e9 / r.bytes_per_step;
      const double steps_per_s = r.tokens_per_s / B;
      std::printf("| %s | %d | %.1f | %.2f | %.1f | %.1f %% | %.3f |\n", mode.name, B,
                  r.tokens_per_s, r.bytes_per_step / 1e6, roofline, 100.0 * steps_per_s / roofline,
                  r.moe_ms_per_step);
    }
    std::printf("| %s | prefill %d | %.1f tok/s | | | | |\n", mode.name, prefill_tokens,
                Prefill(**e, prefill_tokens, runs));
  }
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return moeserve::Main();
}
