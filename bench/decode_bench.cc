// Engine benchmark without the server, in llama-bench's terms:
//   tg: decode `new_tokens` tokens for each of `batch` sequences in lockstep (one engine step
//       per token of every sequence, after a `prompt_len` prefill that is not timed);
//   pp: process a `prompt_len`-token prompt in one step (pp512: --mode pp --prompt_len 512).
// Reports tokens/s (median of --runs), weight bytes read per token, that as a fraction of the
// read bandwidth measured in the same process (the roofline fraction), the time spent in the
// MoE layers, and the batch's union of active experts per MoE layer and step.
//
//   decode_bench --model DIR --dtype bf16 --threads 2 --mode tg --batch 1 --runs 5 [--json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/memory_bandwidth.h"
#include "engine/kernels/cpu/matmul.h"
#include "engine/engine.h"
#include "engine/sampler.h"

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, dtype, "bf16", "compute dtype: f32, bf16, f16 or int8");
ABSL_FLAG(int, threads, 2, "threads");
ABSL_FLAG(std::string, mode, "tg", "tg (decode) or pp (prompt processing)");
ABSL_FLAG(int, prompt_len, 32, "prompt tokens (tg: untimed context; pp: the timed prompt)");
ABSL_FLAG(int, new_tokens, 128, "tg: decoded tokens per sequence and run");
ABSL_FLAG(int, batch, 1, "tg: sequences decoded together");
ABSL_FLAG(int, runs, 5, "runs (the median is reported)");
ABSL_FLAG(bool, dense_experts, false, "evaluate every expert (the dense baseline)");
ABSL_FLAG(bool, json, false, "print one JSON object instead of text");

namespace moeserve {
namespace {

// Sums MoE-layer time and the union of active experts per MoE layer and step.
class StepProbe : public EngineObserver {
 public:
  void OnRouting(int layer, const Routing& routing) override {
    seen_.assign(seen_.size(), 0);
    int64_t distinct = 0;
    for (size_t i = 0; i < routing.experts.size(); ++i) {  // evaluated entries: what is read
      const size_t e = static_cast<size_t>(routing.experts[i]);
      if (e >= seen_.size()) seen_.resize(e + 1, 0);
      if (!seen_[e]) {
        seen_[e] = 1;
        ++distinct;
      }
    }
    union_sum += static_cast<double>(distinct);
    ++routings;
  }
  void OnLayerTime(int layer, LayerOp op, double seconds) override {
    if (op == LayerOp::kMoe) moe_seconds += seconds;
    if (op == LayerOp::kAttention) attention_seconds += seconds;
    total_layer_seconds += seconds;
  }
  void Reset() { *this = StepProbe(); }

  double moe_seconds = 0, attention_seconds = 0, total_layer_seconds = 0, union_sum = 0;
  int64_t routings = 0;

 private:
  std::vector<char> seen_;
};

struct RunResult {
  double tokens_per_s = 0;
  double bytes_per_token = 0;
  double moe_ms_per_step = 0;
  double attention_ms_per_step = 0;  // the attention blocks (projections included)
  double union_per_layer = 0;  // mean distinct active experts per MoE layer and step
  double bandwidth = 0;          // bytes/s, measured just before this run
  double roofline_fraction = 0;  // tokens_per_s / (bandwidth / bytes_per_token)
  double regions_per_step = 0;   // the thread pool's parallel regions (fork/joins)
  double join_wait_ms_per_step = 0;   // the calling thread waiting at their joins
  double worker_spin_ms_per_step = 0;  // the workers spinning between regions
};

template <typename F>
RunResult Median(std::vector<RunResult> runs, F key) {
  std::sort(runs.begin(), runs.end(), [&](const RunResult& a, const RunResult& b) { return key(a) < key(b); });
  return runs[runs.size() / 2];
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
  return 1;
}

int Main() {
  EngineOptions opt;
  opt.model_dir = absl::GetFlag(FLAGS_model);
  auto dtype = ParseComputeDType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return Fail(dtype.status());
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "tg" && mode != "pp") return Fail(absl::InvalidArgumentError("--mode must be tg or pp"));
  const bool pp = mode == "pp";
  opt.compute_dtype = *dtype;
  opt.num_threads = absl::GetFlag(FLAGS_threads);
  opt.dense_experts = absl::GetFlag(FLAGS_dense_experts);
  const int prompt_len = absl::GetFlag(FLAGS_prompt_len);
  const int new_tokens = pp ? 0 : absl::GetFlag(FLAGS_new_tokens);
  const int batch = pp ? 1 : absl::GetFlag(FLAGS_batch);
  const int runs = absl::GetFlag(FLAGS_runs);
  if (prompt_len < 1 || new_tokens < 0 || batch < 1 || runs < 1) {
    return Fail(absl::InvalidArgumentError("--prompt_len, --batch and --runs must be >= 1"));
  }
  const int blocks_per_seq = (prompt_len + new_tokens + opt.kv_block_size - 1) / opt.kv_block_size;
  opt.kv_num_blocks = int64_t{blocks_per_seq} * batch;
  auto engine_or = Engine::Create(opt);
  if (!engine_or.ok()) return Fail(engine_or.status());
  Engine& engine = **engine_or;
  StepProbe probe;
  engine.set_observer(&probe);
  ThreadPool pool(opt.num_threads);
  ReadBandwidthProbe bandwidth_probe(pool, int64_t{1} << 30);

  std::vector<std::vector<int32_t>> tables(batch), histories(batch);
  std::mt19937 rng(1234);
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < blocks_per_seq; ++i) tables[b].push_back(b * blocks_per_seq + i);
  }

  std::vector<RunResult> results;
  for (int run = 0; run <= runs; ++run) {  // run 0 warms up and is not reported
    ForwardOutput out;
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t>& h = histories[b];
      h.assign(1, static_cast<int32_t>(engine.info().bos_token_id));
      for (int i = 1; i < prompt_len; ++i) h.push_back(static_cast<int32_t>(rng() % engine.info().vocab_size));
    }
    // The bandwidth of this moment, for this run's roofline (the VM's bandwidth drifts).
    const double run_bandwidth = bandwidth_probe.Measure(3);
    probe.Reset();
    int64_t bytes = 0, tokens = 0, regions = 0, join_wait_ns = 0, spin_ns = 0;
    auto start = std::chrono::steady_clock::now();
    // Prefill: timed only in pp mode; tg runs one prefill per sequence first.
    std::vector<std::vector<float>> last_logits(batch);
    for (int b = 0; b < batch; ++b) {
      ForwardBatch prefill;
      prefill.chunks.push_back({histories[b], 0, tables[b], LogitsMode::kLast, ExpertBudget{}});
      if (absl::Status s = engine.Forward(prefill, &out); !s.ok()) return Fail(s);
      last_logits[b] = out.logits;
    }
    if (pp) {
      bytes = out.weight_bytes_read;
      regions = out.parallel_regions;
      join_wait_ns = out.join_wait_ns;
      spin_ns = out.worker_spin_ns;
      tokens = prompt_len;
    } else {
      probe.Reset();
      start = std::chrono::steady_clock::now();
      std::vector<Sampler> samplers(batch, Sampler(SamplingParams{}));
      for (int i = 0; i < new_tokens; ++i) {
        ForwardBatch step;
        for (int b = 0; b < batch; ++b) {
          const std::span<const float> logits =
              i == 0 ? std::span<const float>(last_logits[b])
                     : std::span<const float>(out.logits).subspan(b * out.vocab_size, out.vocab_size);
          histories[b].push_back(samplers[b].Sample(logits, histories[b]).id);
        }
        for (int b = 0; b < batch; ++b) {
          step.chunks.push_back({std::span<const int32_t>(&histories[b].back(), 1),
                                 static_cast<int32_t>(histories[b].size() - 1), tables[b], LogitsMode::kLast,
                                 ExpertBudget{}});
        }
        if (absl::Status s = engine.Forward(step, &out); !s.ok()) return Fail(s);
        bytes += out.weight_bytes_read;
        regions += out.parallel_regions;
        join_wait_ns += out.join_wait_ns;
        spin_ns += out.worker_spin_ns;
      }
      tokens = int64_t{new_tokens} * batch;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (run == 0) continue;
    const int64_t steps = pp ? 1 : new_tokens;
    const double bytes_per_token = static_cast<double>(bytes) / tokens;
    results.push_back({tokens / s, bytes_per_token, 1e3 * probe.moe_seconds / steps,
                       1e3 * probe.attention_seconds / steps,
                       probe.routings > 0 ? probe.union_sum / static_cast<double>(probe.routings) : 0.0,
                       run_bandwidth, (tokens / s) / (run_bandwidth / bytes_per_token),
                       static_cast<double>(regions) / steps, 1e-6 * join_wait_ns / steps, 1e-6 * spin_ns / steps});
  }
  const RunResult median = Median(results, [](const RunResult& r) { return r.tokens_per_s; });
  const RunResult moe_median = Median(results, [](const RunResult& r) { return r.moe_ms_per_step; });
  const RunResult attention_median = Median(results, [](const RunResult& r) { return r.attention_ms_per_step; });
  const RunResult wait_median = Median(results, [](const RunResult& r) { return r.join_wait_ms_per_step; });
  const RunResult spin_median = Median(results, [](const RunResult& r) { return r.worker_spin_ms_per_step; });
  double lo = results[0].tokens_per_s, hi = lo;
  for (const RunResult& r : results) lo = std::min(lo, r.tokens_per_s), hi = std::max(hi, r.tokens_per_s);
  // Bandwidth-bound limit: bytes actually read per step at this batch / bandwidth. Each run's
  // fraction uses the bandwidth measured just before it; the median fraction is reported, with
  // the median bandwidth and the roofline it gives.
  const double bandwidth = Median(results, [](const RunResult& r) { return r.bandwidth; }).bandwidth;
  const double fraction = Median(results, [](const RunResult& r) { return r.roofline_fraction; }).roofline_fraction;
  const double roofline = bandwidth / median.bytes_per_token;
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"model\": \"%s\", \"dtype\": \"%s\", \"mode\": \"%s\", \"threads\": %d, \"prompt_len\": %d, "
        "\"new_tokens\": %d, \"batch\": %d, \"runs\": %zu, \"dense_experts\": %s, \"kernel\": \"%s\", "
        "\"bandwidth_gbs\": %.3f, \"tokens_per_s\": %.3f, \"tokens_per_s_min\": %.3f, \"tokens_per_s_max\": %.3f, "
        "\"bytes_per_token\": %.1f, \"roofline_tokens_per_s\": %.3f, \"roofline_fraction\": %.4f, "
        "\"moe_ms_per_step\": %.4f, \"attention_ms_per_step\": %.4f, \"expert_union_per_layer\": %.3f, "
        "\"parallel_regions_per_step\": %.1f, \"join_wait_ms_per_step\": %.4f, \"worker_spin_ms_per_step\": %.4f, "
        "\"runs_bandwidth_gbs\": [",
        opt.model_dir.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), mode.c_str(), engine.info().num_threads, prompt_len,
        new_tokens, batch, results.size(), opt.dense_experts ? "true" : "false", MatMulKernelName(), bandwidth / 1e9,
        median.tokens_per_s, lo, hi, median.bytes_per_token, roofline, fraction,
        moe_median.moe_ms_per_step, attention_median.attention_ms_per_step, median.union_per_layer,
        median.regions_per_step, wait_median.join_wait_ms_per_step, spin_median.worker_spin_ms_per_step);
    // Each run's figure with the bandwidth measured right before it.
    for (size_t i = 0; i < results.size(); ++i) std::printf("%s%.3f", i ? ", " : "", results[i].bandwidth / 1e9);
    std::printf("], \"runs_tokens_per_s\": [");
    for (size_t i = 0; i < results.size(); ++i) std::printf("%s%.3f", i ? ", " : "", results[i].tokens_per_s);
    std::printf("]}\n");
    return 0;
  }
  std::printf("model=%s dtype=%s mode=%s threads=%d prompt=%d new=%d batch=%d runs=%zu dense_experts=%d kernel=%s\n",
              opt.model_dir.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), mode.c_str(), engine.info().num_threads,
              prompt_len, new_tokens, batch, results.size(), opt.dense_experts ? 1 : 0, MatMulKernelName());
  std::printf("read bandwidth (median over the runs, each measured just before its run): %.2f GB/s\n",
              bandwidth / 1e9);
  std::printf("%s tokens/s: median %.2f (min %.2f, max %.2f)\n", pp ? "prompt" : "decode", median.tokens_per_s, lo,
              hi);
  std::printf("weight bytes per token: %.1f MB\n", median.bytes_per_token / 1e6);
  std::printf("roofline (bandwidth / bytes): %.2f tokens/s; fraction (median of the runs' own): %.1f %%\n",
              roofline, 100.0 * fraction);
  std::printf("MoE layers: %.3f ms per step; expert union per MoE layer and step: %.2f\n", moe_median.moe_ms_per_step,
              median.union_per_layer);
  std::printf("attention blocks: %.3f ms per step\n", attention_median.attention_ms_per_step);
  std::printf("thread pool: %.1f parallel regions per step; join wait %.3f ms, worker spin %.3f ms per step\n",
              median.regions_per_step, wait_median.join_wait_ms_per_step, spin_median.worker_spin_ms_per_step);
  return 0;
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return moeserve::Main();
}
