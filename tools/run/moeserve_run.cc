// moeserve-run: the offline engine CLI. Loads a checkpoint, feeds a prompt through the KV cache
// (optionally in chunks), dumps logits and routing of the prompt, and streams a generation.
//
//   moeserve-run --model DIR --prompt "Hello" --max-new-tokens 32
//   moeserve-run --model DIR --token-ids 1,5,9 --max-new-tokens 0 --dump-logits l.bin --dump-routing r.json
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "common/status_macros.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "model directory (config.json + safetensors)");
ABSL_FLAG(std::string, prompt, "", "prompt text (needs tokenizer.model); BOS is prepended");
ABSL_FLAG(std::string, token_ids, "", "prompt as comma-separated token ids, used as given");
ABSL_FLAG(int, max_new_tokens, 32, "tokens to generate after the prompt");
ABSL_FLAG(std::string, dtype, "f32",
          "compute weights: f32, bf16, f16 or int8 (per-row scales; activations are always fp32)");
ABSL_FLAG(int, threads, 0, "worker threads (0 = all cores)");
ABSL_FLAG(int, prefill_chunk, 0, "feed the prompt N tokens per step (0 = all at once, 1 = token by token)");
ABSL_FLAG(std::string, dump_logits, "", "write float32 [prompt_len, vocab] logits of every prompt position");
ABSL_FLAG(std::string, dump_routing, "", "write the routed experts and weights of every prompt token as JSON");
ABSL_FLAG(bool, dense_experts, false, "debug: evaluate every expert (zero weight when not routed)");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature (0 = greedy)");
ABSL_FLAG(int, top_k, 0, "top-k sampling (0 = off)");
ABSL_FLAG(float, top_p, 1.0f, "top-p sampling (1 = off)");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past end-of-sequence tokens");
ABSL_FLAG(bool, quiet, false, "print no generated text (benchmarks)");
ABSL_FLAG(float, budget_min_weight, 0.0f,
          "expert budget, DECO/BlockFFN and ReMoE: drop routed experts whose |weight| is below this (0 = off)");
ABSL_FLAG(float, budget_k_scale, 1.0f, "expert budget, SoftMoE: scale every layer's k_l by this (1 = exact)");
ABSL_FLAG(int, budget_max_experts, 0, "expert budget, top-k and TopP: at most this many experts per token (0 = off)");

namespace moeserve {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--token_ids: \"", part, "\" is not an integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--token_ids: no ids given");
  return ids;
}

// Routing of every prompt token, per layer, gathered from the engine's observer.
struct RoutingDump : EngineObserver {
  std::vector<std::vector<std::vector<int32_t>>> experts;  // [layer][token][k]
  std::vector<std::vector<std::vector<float>>> weights;

  void OnRouting(int layer, const Routing& r) override {
    for (int64_t t = 0; t < r.num_tokens(); ++t) {
      std::vector<int32_t> ids;
      std::vector<float> ws;
      for (int32_t i = r.offsets[t]; i < r.offsets[t + 1]; ++i) {
        if (!r.active[i]) continue;
        ids.push_back(r.experts[i]);
        ws.push_back(r.weights[i]);
      }
      experts[layer].push_back(std::move(ids));
      weights[layer].push_back(std::move(ws));
    }
  }

  absl::Status Write(const std::string& path, const EngineInfo& info) const {
    nlohmann::json layers = nlohmann::json::array();
    for (int i = 0; i < info.num_layers; ++i) {
      const int num_experts = info.ExpertsOfLayer(i);
      layers.push_back({{"layer", i},
                        {"kind", num_experts > 0 ? "moe" : "dense"},
                        {"num_experts", num_experts},
                        {"active_experts", experts[i]},
                        {"weights", weights[i]}});
    }
    std::ofstream out(path);
    out << nlohmann::json{{"layers", layers}}.dump() << "\n";
    if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
    return absl::OkStatus();
  }
};

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  const bool has_prompt = !absl::GetFlag(FLAGS_prompt).empty();
  const bool has_ids = !absl::GetFlag(FLAGS_token_ids).empty();
  if (has_prompt == has_ids) return absl::InvalidArgumentError("give exactly one of --prompt and --token_ids");
  const int max_new = absl::GetFlag(FLAGS_max_new_tokens);
  if (max_new < 0) return absl::InvalidArgumentError("--max_new_tokens must be >= 0");
  if (absl::GetFlag(FLAGS_prefill_chunk) < 0) return absl::InvalidArgumentError("--prefill_chunk must be >= 0");

  std::unique_ptr<Tokenizer> tokenizer;
  auto loaded = Tokenizer::Load(model_dir);
  if (loaded.ok()) {
    tokenizer = std::move(*loaded);
  } else if (!absl::IsNotFound(loaded.status()) || has_prompt) {
    return loaded.status();
  }
  std::vector<int32_t> prompt;
  if (has_prompt) {
    ASSIGN_OR_RETURN(prompt, tokenizer->Encode(absl::GetFlag(FLAGS_prompt), /*add_bos=*/true));
  } else {
    ASSIGN_OR_RETURN(prompt, ParseTokenIds(absl::GetFlag(FLAGS_token_ids)));
  }

  ExpertBudget budget;
  budget.min_weight = absl::GetFlag(FLAGS_budget_min_weight);
  budget.k_scale = absl::GetFlag(FLAGS_budget_k_scale);
  budget.max_experts = absl::GetFlag(FLAGS_budget_max_experts);
  if (const char* bad = budget.Invalid(); bad != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--budget_*: ", bad));
  }

  EngineOptions options;
  options.model_dir = model_dir;
  ASSIGN_OR_RETURN(options.compute_dtype, ParseComputeDType(absl::GetFlag(FLAGS_dtype)));
  options.num_threads = absl::GetFlag(FLAGS_threads);
  options.dense_experts = absl::GetFlag(FLAGS_dense_experts);
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new;
  options.kv_num_blocks = (total + options.kv_block_size - 1) / options.kv_block_size;
  const auto load_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(auto engine, Engine::Create(options));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  for (const std::string& warning : engine->info().warnings) std::cerr << "warning: " << warning << "\n";
  if (total > engine->info().max_context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", prompt.size(), ") + --max_new_tokens (", max_new,
                                                   ") exceeds the model's max context ", engine->info().max_context));
  }
  std::vector<int32_t> block_table(options.kv_num_blocks);
  for (int64_t i = 0; i < options.kv_num_blocks; ++i) block_table[i] = static_cast<int32_t>(i);

  const size_t num_layers = static_cast<size_t>(engine->info().num_layers);
  RoutingDump routing;
  routing.experts.resize(num_layers);
  routing.weights.resize(num_layers);
  const bool dump_routing = !absl::GetFlag(FLAGS_dump_routing).empty();
  if (dump_routing) engine->set_observer(&routing);

  // Prefill, chunk by chunk.
  const bool dump_logits = !absl::GetFlag(FLAGS_dump_logits).empty();
  const int64_t chunk = absl::GetFlag(FLAGS_prefill_chunk) > 0 ? absl::GetFlag(FLAGS_prefill_chunk)
                                                               : static_cast<int64_t>(prompt.size());
  std::vector<float> prompt_logits, last_logits;
  std::vector<double> active_sum(num_layers, 0.0);
  int64_t routed_tokens = 0;
  ForwardOutput out;
  const auto prefill_start = std::chrono::steady_clock::now();
  for (int64_t start = 0; start < static_cast<int64_t>(prompt.size()); start += chunk) {
    const int64_t n = std::min<int64_t>(chunk, prompt.size() - start);
    ForwardBatch batch;
    batch.chunks.push_back({std::span<const int32_t>(prompt).subspan(start, n), static_cast<int32_t>(start),
                            block_table, dump_logits ? LogitsMode::kAll : LogitsMode::kLast, budget});
    RETURN_IF_ERROR(engine->Forward(batch, &out));
    if (dump_logits) prompt_logits.insert(prompt_logits.end(), out.logits.begin(), out.logits.end());
    last_logits.assign(out.logits.end() - engine->info().vocab_size, out.logits.end());
    for (size_t l = 0; l < num_layers; ++l) {
      for (int64_t t = 0; t < n; ++t) active_sum[l] += out.active_counts[l * n + t];
    }
    routed_tokens += n;
  }
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_start).count();
  engine->set_observer(nullptr);
  if (dump_logits) {
    std::ofstream f(absl::GetFlag(FLAGS_dump_logits), std::ios::binary);
    f.write(reinterpret_cast<const char*>(prompt_logits.data()), prompt_logits.size() * sizeof(float));
    if (!f) return absl::InternalError(absl::StrCat(absl::GetFlag(FLAGS_dump_logits), ": cannot write"));
  }
  if (dump_routing) RETURN_IF_ERROR(routing.Write(absl::GetFlag(FLAGS_dump_routing), engine->info()));

  // Decode.
  SamplingParams sp;
  sp.temperature = absl::GetFlag(FLAGS_temperature);
  sp.top_k = absl::GetFlag(FLAGS_top_k);
  sp.top_p = absl::GetFlag(FLAGS_top_p);
  sp.seed = absl::GetFlag(FLAGS_seed);
  Sampler sampler(sp);
  std::vector<int32_t> history = prompt;
  std::unique_ptr<StreamingDetokenizer> detok;
  if (tokenizer) detok = std::make_unique<StreamingDetokenizer>(tokenizer.get());
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const auto& eos = engine->info().eos_token_ids;
  int generated = 0;
  const auto decode_start = std::chrono::steady_clock::now();
  while (generated < max_new) {
    const SampledToken next = sampler.Sample(last_logits, history);
    history.push_back(next.id);
    ++generated;
    if (!quiet) {
      std::cout << (detok ? detok->Push(next.id) : absl::StrCat(generated > 1 ? " " : "", next.id)) << std::flush;
    }
    const bool is_eos = std::find(eos.begin(), eos.end(), next.id) != eos.end();
    if ((is_eos && !absl::GetFlag(FLAGS_ignore_eos)) || generated == max_new) break;
    ForwardBatch batch;
    batch.chunks.push_back({std::span<const int32_t>(&history.back(), 1), static_cast<int32_t>(history.size() - 1),
                            block_table, LogitsMode::kLast, budget});
    RETURN_IF_ERROR(engine->Forward(batch, &out));
    last_logits.assign(out.logits.begin(), out.logits.end());
    for (size_t l = 0; l < num_layers; ++l) active_sum[l] += out.active_counts[l];
    ++routed_tokens;
  }
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - decode_start).count();
  if (!quiet) std::cout << (detok ? detok->Flush() : "") << "\n";

  std::string active;
  for (size_t l = 0; l < num_layers; ++l) {
    if (engine->info().ExpertsOfLayer(static_cast<int>(l)) > 0) {
      absl::StrAppend(&active, active.empty() ? "" : " ", absl::StrFormat("%.2f", active_sum[l] / routed_tokens));
    }
  }
  std::cerr << absl::StrFormat(
                   "load %.2fs | prompt %d tokens in %.3fs (%.1f tok/s) | generated %d tokens in %.3fs (%.2f tok/s) | "
                   "dtype %s, %d threads\n",
                   load_s, prompt.size(), prefill_s, prompt.size() / std::max(prefill_s, 1e-9), generated, decode_s,
                   generated > 1 ? (generated - 1) / std::max(decode_s, 1e-9) : 0.0,
                   absl::GetFlag(FLAGS_dtype), engine->info().num_threads)
            << "mean active experts per MoE layer: " << (active.empty() ? "(dense model)" : active) << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace moeserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moeserve-run --model DIR (--prompt TEXT | --token-ids 1,5,9) [flags]");
  // Accept --token-ids as well as absl's --token_ids spelling.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> argp;
  for (std::string& a : args) {
    if (a.rfind("--", 0) == 0) {
      const size_t end = std::min(a.find('='), a.size());
      for (size_t i = 2; i < end; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    argp.push_back(a.data());
  }
  absl::ParseCommandLine(static_cast<int>(argp.size()), argp.data());
  const absl::Status status = moeserve::Run();
  if (!status.ok()) {
    std::cerr << "error: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
