// Decode benchmark (batch 1): tokens/s, weight bytes read per decoded token, and that as a
// fraction of the read bandwidth measured in the same process (the roofline fraction).
//
//   decode_bench --model DIR --dtype bf16 --threads 2 --prompt-len 32 --new-tokens 128 --runs 5
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/memory_bandwidth.h"
#include "engine/engine.h"
#include "engine/sampler.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, dtype, "bf16", "compute dtype: f32 or bf16");
ABSL_FLAG(int, threads, 2, "threads");
ABSL_FLAG(int, prompt_len, 32, "prompt tokens");
ABSL_FLAG(int, new_tokens, 128, "decoded tokens per run");
ABSL_FLAG(int, runs, 5, "runs (the median is reported)");
ABSL_FLAG(bool, dense_experts, false, "evaluate every expert (the dense baseline)");

namespace moeserve {
namespace {

struct RunResult {
  double tokens_per_s;
  double bytes_per_token;
};

int Main() {
  EngineOptions opt;
  opt.model_dir = absl::GetFlag(FLAGS_model);
  auto dtype = ParseComputeDType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(dtype.status().message()).c_str());
    return 1;
  }
  opt.compute_dtype = *dtype;
  opt.num_threads = absl::GetFlag(FLAGS_threads);
  opt.dense_experts = absl::GetFlag(FLAGS_dense_experts);
  const int prompt_len = absl::GetFlag(FLAGS_prompt_len), new_tokens = absl::GetFlag(FLAGS_new_tokens);
  opt.kv_num_blocks = (prompt_len + new_tokens + opt.kv_block_size - 1) / opt.kv_block_size;
  auto engine_or = Engine::Create(opt);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(engine_or.status().message()).c_str());
    return 1;
  }
  Engine& engine = **engine_or;
  ThreadPool pool(opt.num_threads);
  const double bandwidth = MeasureReadBandwidth(pool, int64_t{1} << 30, 5);

  std::vector<int32_t> blocks(opt.kv_num_blocks);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<int32_t>(i);
  std::mt19937 rng(1234);
  std::vector<int32_t> prompt(prompt_len);
  prompt[0] = static_cast<int32_t>(engine.config().bos_token_id);
  for (int i = 1; i < prompt_len; ++i) prompt[i] = static_cast<int32_t>(rng() % engine.vocab_size());

  std::vector<RunResult> results;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    ForwardOutput out;
    ForwardBatch prefill;
    prefill.chunks.push_back({prompt, 0, blocks, LogitsMode::kLast, ExpertBudget{}});
    if (!engine.Forward(prefill, &out).ok()) return 1;
    Sampler sampler(SamplingParams{});
    std::vector<int32_t> history = prompt;
    int64_t bytes = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < new_tokens; ++i) {
      history.push_back(sampler.Sample(out.logits, history).id);
      ForwardBatch step;
      step.chunks.push_back({std::span<const int32_t>(&history.back(), 1),
                             static_cast<int32_t>(history.size() - 1), blocks, LogitsMode::kLast, ExpertBudget{}});
      if (!engine.Forward(step, &out).ok()) return 1;
      bytes += out.weight_bytes_read;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    results.push_back({new_tokens / s, static_cast<double>(bytes) / new_tokens});
  }
  std::sort(results.begin(), results.end(),
            [](const RunResult& a, const RunResult& b) { return a.tokens_per_s < b.tokens_per_s; });
  const RunResult median = results[results.size() / 2];
  const double roofline = bandwidth / median.bytes_per_token;
  std::printf("model=%s dtype=%s threads=%d prompt=%d new=%d runs=%zu dense_experts=%d\n", opt.model_dir.c_str(),
              absl::GetFlag(FLAGS_dtype).c_str(), engine.num_threads(), prompt_len, new_tokens, results.size(),
              opt.dense_experts ? 1 : 0);
  std::printf("read bandwidth (median of 5): %.2f GB/s\n", bandwidth / 1e9);
  std::printf("decode tokens/s: median %.2f (min %.2f, max %.2f)\n", median.tokens_per_s, results.front().tokens_per_s,
              results.back().tokens_per_s);
  std::printf("weight bytes per decoded token: %.1f MB\n", median.bytes_per_token / 1e6);
  std::printf("roofline (bandwidth / bytes): %.2f tokens/s -> fraction %.1f %%\n", roofline,
              100.0 * median.tokens_per_s / roofline);
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return moeserve::Main();
}
