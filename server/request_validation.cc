#include "server/request_validation.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace moeserve {
namespace {

constexpr int kMaxLogprobs = 20;
constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopStringBytes = 256;
constexpr size_t kMaxRequestIdBytes = 128;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool InRange(float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

ValidationLimits MakeValidationLimits(const ServerConfig& config, const EngineInfo& info) {
  ValidationLimits limits;
  limits.vocab_size = info.vocab_size;
  limits.max_context = info.max_context;
  limits.default_max_new_tokens = config.server.default_max_new_tokens;
  limits.max_new_tokens_limit = config.server.max_new_tokens_limit;
  limits.max_prompt_tokens = config.server.max_prompt_tokens;
  limits.eos_token_ids = info.eos_token_ids;
  limits.default_budget = config.model.expert_budget;
  return limits;
}

absl::StatusOr<RequestParams> ValidateGenerateRequest(const v1::GenerateRequest& r, const Tokenizer* tokenizer,
                                                      const ValidationLimits& limits) {
  RequestParams p;
  switch (r.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (r.text().empty()) return Bad("text", "empty prompt");
      if (tokenizer == nullptr) return Bad("text", "this model has no tokenizer; send token_ids");
      auto ids = tokenizer->Encode(r.text(), /*add_bos=*/true);
      if (!ids.ok()) return Bad("text", std::string(ids.status().message()));
      p.prompt = std::move(*ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      if (r.token_ids().ids().empty()) return Bad("token_ids", "empty prompt");
      for (int i = 0; i < r.token_ids().ids_size(); ++i) {
        const int32_t id = r.token_ids().ids(i);
        if (id < 0 || id >= limits.vocab_size) {
          return Bad(absl::StrCat("token_ids[", i, "]"),
                     absl::StrCat(id, " is out of range [0, ", limits.vocab_size, ")"));
        }
        p.prompt.push_back(id);
      }
      break;
    }
    default:
      return Bad("prompt", "set text or token_ids");
  }
  const int64_t prompt_len = static_cast<int64_t>(p.prompt.size());
  const int64_t max_prompt = limits.max_prompt_tokens > 0 ? limits.max_prompt_tokens : limits.max_context;
  if (prompt_len > max_prompt || prompt_len >= limits.max_context) {
    return Bad(r.prompt_case() == v1::GenerateRequest::kText ? "text" : "token_ids",
               absl::StrCat("prompt of ", prompt_len, " tokens is too long (limit ",
                            std::min<int64_t>(max_prompt, limits.max_context - 1), ")"));
  }
  if (r.max_new_tokens() > static_cast<uint32_t>(limits.max_new_tokens_limit)) {
    return Bad("max_new_tokens", absl::StrCat(r.max_new_tokens(), " exceeds the server's limit ",
                                              limits.max_new_tokens_limit));
  }
  if (r.max_new_tokens() == 0) {
    // Unset: the server default, within what the context leaves.
    p.max_new_tokens = static_cast<int32_t>(std::min<int64_t>(limits.default_max_new_tokens,
                                                              limits.max_context - prompt_len));
  } else {
    p.max_new_tokens = static_cast<int32_t>(r.max_new_tokens());
    if (prompt_len + p.max_new_tokens > limits.max_context) {
      return Bad("max_new_tokens", absl::StrCat("prompt (", prompt_len, ") + max_new_tokens (", p.max_new_tokens,
                                                ") exceeds the model's context of ", limits.max_context));
    }
  }

  const v1::SamplingParams& s = r.sampling();
  if (!InRange(s.temperature(), 0.0f, 100.0f)) return Bad("sampling.temperature", "must be in [0, 100]");
  if (s.top_k() < 0) return Bad("sampling.top_k", "must be >= 0");
  if (s.has_top_p() && !(std::isfinite(s.top_p()) && s.top_p() > 0.0f && s.top_p() <= 1.0f)) {
    return Bad("sampling.top_p", "must be in (0, 1]");
  }
  if (!InRange(s.min_p(), 0.0f, 1.0f)) return Bad("sampling.min_p", "must be in [0, 1]");
  if (s.has_repetition_penalty() && !InRange(s.repetition_penalty(), 1e-3f, 100.0f)) {
    return Bad("sampling.repetition_penalty", "must be > 0");
  }
  if (!InRange(s.presence_penalty(), -2.0f, 2.0f)) return Bad("sampling.presence_penalty", "must be in [-2, 2]");
  if (!InRange(s.frequency_penalty(), -2.0f, 2.0f)) return Bad("sampling.frequency_penalty", "must be in [-2, 2]");
  p.sampling.temperature = s.temperature();
  p.sampling.top_k = s.top_k();
  p.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  p.sampling.min_p = s.min_p();
  p.sampling.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  p.sampling.presence_penalty = s.presence_penalty();
  p.sampling.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) {
    p.sampling.seed = s.seed();
  } else {
    static thread_local std::mt19937_64 seeder{std::random_device{}()};
    p.sampling.seed = seeder();
  }

  if (r.stop_size() > kMaxStopStrings) return Bad("stop", absl::StrCat("at most ", kMaxStopStrings, " stop strings"));
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty()) return Bad(absl::StrCat("stop[", i, "]"), "must not be empty");
    if (r.stop(i).size() > kMaxStopStringBytes) {
      return Bad(absl::StrCat("stop[", i, "]"), absl::StrCat("longer than ", kMaxStopStringBytes, " bytes"));
    }
    if (tokenizer == nullptr) return Bad("stop", "stop strings need a tokenizer; use stop_token_ids");
    p.stop_strings.push_back(r.stop(i));
  }
  for (int i = 0; i < r.stop_token_ids_size(); ++i) {
    const int32_t id = r.stop_token_ids(i);
    if (id < 0 || id >= limits.vocab_size) {
      return Bad(absl::StrCat("stop_token_ids[", i, "]"),
                 absl::StrCat(id, " is out of range [0, ", limits.vocab_size, ")"));
    }
    p.stop_token_ids.push_back(id);
  }
  if (!r.ignore_eos()) {
    for (int64_t id : limits.eos_token_ids) {
      if (id >= 0 && id < limits.vocab_size) p.stop_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (r.logprobs() > kMaxLogprobs) return Bad("logprobs", absl::StrCat("at most ", kMaxLogprobs));
  p.logprobs_top_n = static_cast<int>(r.logprobs());
  if (r.request_id().size() > kMaxRequestIdBytes) {
    return Bad("request_id", absl::StrCat("longer than ", kMaxRequestIdBytes, " bytes"));
  }
  p.request_id = r.request_id();
  p.priority = r.priority();
  p.prefix_cache = !r.skip_prefix_cache();
  if (r.has_speculative()) {
    if (r.speculative().max_draft_tokens() > 64) return Bad("speculative.max_draft_tokens", "must be <= 64");
    p.max_draft_tokens = static_cast<int>(r.speculative().max_draft_tokens());
  }
  p.budget = limits.default_budget;
  if (r.has_expert_budget()) {
    const v1::ExpertBudget& b = r.expert_budget();
    if (!std::isfinite(b.min_weight()) || b.min_weight() < 0) return Bad("expert_budget.min_weight", "must be >= 0");
    if (!std::isfinite(b.k_scale()) || b.k_scale() < 0) return Bad("expert_budget.k_scale", "must be > 0 (0 = unset)");
    if (b.max_experts() > 1 << 16) return Bad("expert_budget.max_experts", "is implausibly large");
    p.budget = OverrideExpertBudget(limits.default_budget, b.min_weight(), b.k_scale(),
                                    static_cast<int>(b.max_experts()));
  }
  return p;
}

}  // namespace moeserve
