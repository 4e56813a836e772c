#include "server/openai/openai_request.h"

#include <cmath>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"

namespace moeserve {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& param, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", what));
}

// Fields each endpoint accepts. Anything else is refused as OpenAI does ("Unrecognized request
// argument"); the ones listed in kUnsupported are known OpenAI fields this server does not do.
const std::set<std::string> kCompletionFields = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "logprobs", "echo",
    "stop", "presence_penalty", "frequency_penalty", "best_of", "logit_bias", "user", "seed", "suffix", "moe",
    "top_k", "min_p", "repetition_penalty", "speculative"};
const std::set<std::string> kChatFields = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "seed", "user",
    "logit_bias", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "moe", "top_k", "min_p", "repetition_penalty", "speculative"};
const std::set<std::string> kUnsupported = {"tools", "tool_choice", "parallel_tool_calls", "functions",
                                            "function_call", "suffix"};

// A present, non-null member (OpenAI treats null as "not given").
const json* Get(const json& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<double> Number(const json& v, const std::string& param) {
  if (!v.is_number()) return Bad(param, "must be a number");
  const double d = v.get<double>();
  if (!std::isfinite(d)) return Bad(param, "must be finite");
  return d;
}

absl::StatusOr<int64_t> Integer(const json& v, const std::string& param) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return Bad(param, "must be an integer");
}

absl::StatusOr<bool> Boolean(const json& v, const std::string& param) {
  if (!v.is_boolean()) return Bad(param, "must be true or false");
  return v.get<bool>();
}

// Finite floats outside float's range must not become inf on the way to the proto.
float ToFloat(double d) {
  const double m = std::numeric_limits<float>::max();
  return static_cast<float>(std::clamp(d, -m, m));
}

absl::Status ParsePrompt(const json& body, bool has_tokenizer, v1::GenerateRequest& g) {
  const json* p = Get(body, "prompt");
  if (p == nullptr) return Bad("prompt", "required");
  const json* single = p;
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() != 1) return Bad("prompt", "only one prompt per request is supported (n/batches of prompts are not)");
    single = &p->front();
  }
  if (single->is_string()) {
    if (!has_tokenizer) return Bad("prompt", "this model has no tokenizer; send a list of token ids");
    g.set_text(single->get<std::string>());
    if (g.text().empty()) return Bad("prompt", "empty prompt");
    return absl::OkStatus();
  }
  if (!single->is_array()) return Bad("prompt", "must be a string or a list of token ids");
  if (single->empty()) return Bad("prompt", "empty prompt");
  for (size_t i = 0; i < single->size(); ++i) {
    const std::string param = absl::StrCat("prompt[", i, "]");
    ASSIGN_OR_RETURN(const int64_t id, Integer((*single)[i], param));
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) return Bad(param, absl::StrCat(id, " is not a token id"));
    g.mutable_token_ids()->add_ids(static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MessageContent(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Bad(param, "must be a string or a list of text parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string pp = absl::StrCat(param, "[", j, "]");
    if (!part.is_object()) return Bad(pp, "must be an object");
    for (const auto& [k, v] : part.items()) {
      if (k != "type" && k != "text") return Bad(absl::StrCat(pp, ".", k), "not supported (only text parts are)");
    }
    const json* type = Get(part, "type");
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
      return Bad(absl::StrCat(pp, ".type"), "only \"text\" parts are supported");
    }
    const json* t = Get(part, "text");
    if (t == nullptr || !t->is_string()) return Bad(absl::StrCat(pp, ".text"), "must be a string");
    text += t->get<std::string>();
  }
  return text;
}

absl::Status ParseMessages(const json& body, bool has_tokenizer, const ChatTemplate& chat_template,
                           v1::GenerateRequest& g) {
  const json* m = Get(body, "messages");
  if (m == nullptr) return Bad("messages", "required");
  if (!m->is_array()) return Bad("messages", "must be a list of messages");
  if (m->empty()) return Bad("messages", "must not be empty");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!msg.is_object()) return Bad(param, "must be an object with role and content");
    for (const auto& [k, v] : msg.items()) {
      if (k != "role" && k != "content") return Bad(absl::StrCat(param, ".", k), "not supported");
    }
    const json* role = Get(msg, "role");
    if (role == nullptr || !role->is_string()) return Bad(absl::StrCat(param, ".role"), "must be a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant") {
      return Bad(absl::StrCat(param, ".role"),
                 absl::StrCat("\"", r, "\" is not supported (system, developer, user or assistant)"));
    }
    const json* content = Get(msg, "content");
    if (content == nullptr) return Bad(absl::StrCat(param, ".content"), "required");
    ASSIGN_OR_RETURN(std::string text, MessageContent(*content, absl::StrCat(param, ".content")));
    messages.push_back({r, std::move(text)});
  }
  if (!has_tokenizer) return Bad("messages", "this model has no tokenizer; use /v1/completions with token ids");
  g.set_text(chat_template.Render(messages));
  return absl::OkStatus();
}

absl::Status ParseStop(const json& v, v1::GenerateRequest& g) {
  if (v.is_string()) {
    g.add_stop(v.get<std::string>());
    return absl::OkStatus();
  }
  if (!v.is_array()) return Bad("stop", "must be a string or a list of strings");
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) return Bad(absl::StrCat("stop[", i, "]"), "must be a string");
    g.add_stop(v[i].get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseMoe(const json& v, v1::GenerateRequest& g) {
  if (!v.is_object()) return Bad("moe", "must be an object");
  for (const auto& [k, item] : v.items()) {
    if (k == "prefix_cache") {  // false: neither reuse nor publish cached KV blocks
      if (!item.is_boolean()) return Bad("moe.prefix_cache", "must be a boolean");
      g.set_skip_prefix_cache(!item.get<bool>());
      continue;
    }
    if (k != "expert_budget") {
      return Bad(absl::StrCat("moe.", k), "unknown field (moe takes expert_budget and prefix_cache)");
    }
    if (item.is_null()) continue;
    if (!item.is_object()) return Bad("moe.expert_budget", "must be an object");
    v1::ExpertBudget* b = g.mutable_expert_budget();
    for (const auto& [name, value] : item.items()) {
      const std::string param = absl::StrCat("moe.expert_budget.", name);
      if (value.is_null()) continue;
      if (name == "min_weight" || name == "k_scale") {
        ASSIGN_OR_RETURN(const double d, Number(value, param));
        (name == "min_weight" ? b->set_min_weight(ToFloat(d)) : b->set_k_scale(ToFloat(d)));
      } else if (name == "max_experts") {
        ASSIGN_OR_RETURN(const int64_t n, Integer(value, param));
        if (n < 0) return Bad(param, "must be >= 0");
        b->set_max_experts(static_cast<uint32_t>(std::min<int64_t>(n, std::numeric_limits<uint32_t>::max())));
      } else {
        return Bad(param, "unknown field (min_weight, k_scale or max_experts)");
      }
    }
  }
  return absl::OkStatus();
}

// Speculative decoding (vLLM's name): {"max_draft_tokens": k}, k = 0 turning it off.
absl::Status ParseSpeculative(const json& v, v1::GenerateRequest& g) {
  if (!v.is_object()) return Bad("speculative", "must be an object");
  for (const auto& [k, item] : v.items()) {
    if (k != "max_draft_tokens") return Bad(absl::StrCat("speculative.", k), "unknown field (max_draft_tokens)");
    ASSIGN_OR_RETURN(const int64_t n, Integer(item, "speculative.max_draft_tokens"));
    if (n < 0) return Bad("speculative.max_draft_tokens", "must be >= 0");
    g.mutable_speculative()->set_max_draft_tokens(static_cast<uint32_t>(std::min<int64_t>(n, 1 << 20)));
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& body, OpenAiRequest& r) {
  v1::SamplingParams* s = r.generate.mutable_sampling();
  if (const json* v = Get(body, "temperature")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "temperature"));
    s->set_temperature(ToFloat(d));
  }
  if (const json* v = Get(body, "top_p")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "top_p"));
    s->set_top_p(ToFloat(d));
  }
  if (const json* v = Get(body, "top_k")) {
    ASSIGN_OR_RETURN(const int64_t k, Integer(*v, "top_k"));
    // vLLM's convention: -1 = off.
    if (k < -1 || k > std::numeric_limits<int32_t>::max()) return Bad("top_k", "must be >= 0 (or -1 = off)");
    s->set_top_k(k == -1 ? 0 : static_cast<int32_t>(k));
  }
  if (const json* v = Get(body, "min_p")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "min_p"));
    s->set_min_p(ToFloat(d));
  }
  if (const json* v = Get(body, "repetition_penalty")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "repetition_penalty"));
    s->set_repetition_penalty(ToFloat(d));
  }
  if (const json* v = Get(body, "presence_penalty")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "presence_penalty"));
    s->set_presence_penalty(ToFloat(d));
  }
  if (const json* v = Get(body, "frequency_penalty")) {
    ASSIGN_OR_RETURN(const double d, Number(*v, "frequency_penalty"));
    s->set_frequency_penalty(ToFloat(d));
  }
  if (const json* v = Get(body, "seed")) {
    ASSIGN_OR_RETURN(const int64_t seed, Integer(*v, "seed"));
    s->set_seed(static_cast<uint64_t>(seed));  // negative seeds wrap, as any 64-bit seed is fine
  }
  return absl::OkStatus();
}

absl::Status ParseLogprobs(const json& body, OpenAiRequest& r) {
  if (r.kind == ApiKind::kCompletion) {
    // Legacy completions: an integer, the number of alternatives (0 = the chosen token only).
    if (const json* v = Get(body, "logprobs")) {
      if (v->is_boolean()) return Bad("logprobs", "must be an integer (the number of alternatives) for completions");
      ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "logprobs"));
      if (n < 0) return Bad("logprobs", "must be >= 0");
      r.logprobs = true;
      r.top_logprobs = static_cast<int>(std::min<int64_t>(n, 1 << 20));
    }
  } else {
    if (const json* v = Get(body, "logprobs")) {
      ASSIGN_OR_RETURN(r.logprobs, Boolean(*v, "logprobs"));
    }
    if (const json* v = Get(body, "top_logprobs")) {
      ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "top_logprobs"));
      if (n < 0) return Bad("top_logprobs", "must be >= 0");
      if (!r.logprobs) return Bad("top_logprobs", "needs \"logprobs\": true");
      r.top_logprobs = static_cast<int>(std::min<int64_t>(n, 1 << 20));
    }
  }
  // The engine computes logprobs together with the top-n; n = 1 when only the chosen is wanted.
  if (r.logprobs) r.generate.set_logprobs(static_cast<uint32_t>(std::max(r.top_logprobs, 1)));
  return absl::OkStatus();
}

// Fields accepted only with their neutral value.
absl::Status CheckNeutral(const json& body, ApiKind kind) {
  if (const json* v = Get(body, "n")) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "n"));
    if (n != 1) return Bad("n", "only n=1 is supported");
  }
  if (const json* v = Get(body, "best_of")) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*v, "best_of"));
    if (n != 1) return Bad("best_of", "only best_of=1 is supported");
  }
  if (const json* v = Get(body, "echo")) {
    ASSIGN_OR_RETURN(const bool echo, Boolean(*v, "echo"));
    if (echo) return Bad("echo", "echo=true is not supported");
  }
  if (const json* v = Get(body, "logit_bias")) {
    if (!v->is_object()) return Bad("logit_bias", "must be an object");
    if (!v->empty()) return Bad("logit_bias", "not supported");
  }
  if (const json* v = Get(body, "response_format")) {
    const json* type = v->is_object() ? Get(*v, "type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text" || v->size() != 1) {
      return Bad("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  if (const json* v = Get(body, "user"); v != nullptr && !v->is_string()) return Bad("user", "must be a string");
  for (const std::string& f : kUnsupported) {
    if (Get(body, f.c_str()) != nullptr) return Bad(f, "not supported by this server");
  }
  (void)kind;
  return absl::OkStatus();
}

absl::StatusOr<OpenAiRequest> Parse(ApiKind kind, const json& body, const ChatTemplate& chat_template,
                                    bool has_tokenizer) {
  if (!body.is_object()) return Bad("body", "must be a JSON object");
  OpenAiRequest r;
  r.kind = kind;
  const std::set<std::string>& known = kind == ApiKind::kChat ? kChatFields : kCompletionFields;
  for (const auto& [key, value] : body.items()) {
    if (known.count(key) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(key, ": Unrecognized request argument supplied: ", key));
    }
  }
  const json* model = Get(body, "model");
  if (model == nullptr || !model->is_string()) return Bad("model", "required (a string; see GET /v1/models)");
  r.model = model->get<std::string>();
  RETURN_IF_ERROR(CheckNeutral(body, kind));

  if (const json* v = Get(body, "stream")) {
    ASSIGN_OR_RETURN(r.stream, Boolean(*v, "stream"));
  }
  if (const json* v = Get(body, "stream_options")) {
    if (!r.stream) return Bad("stream_options", "only allowed when stream is true");
    if (!v->is_object()) return Bad("stream_options", "must be an object");
    for (const auto& [k, item] : v->items()) {
      if (k != "include_usage") return Bad(absl::StrCat("stream_options.", k), "not supported");
      if (!item.is_null()) {
        ASSIGN_OR_RETURN(r.include_usage, Boolean(item, "stream_options.include_usage"));
      }
    }
  }

  const json* max_tokens = Get(body, "max_tokens");
  if (kind == ApiKind::kChat) {
    if (const json* v = Get(body, "max_completion_tokens")) {
      if (max_tokens != nullptr) return Bad("max_completion_tokens", "set max_tokens or max_completion_tokens, not both");
      max_tokens = v;
      r.max_tokens_param = "max_completion_tokens";
    }
  }
  if (max_tokens != nullptr) {
    ASSIGN_OR_RETURN(const int64_t n, Integer(*max_tokens, r.max_tokens_param));
    if (n < 1) return Bad(r.max_tokens_param, "must be >= 1");
    r.generate.set_max_new_tokens(static_cast<uint32_t>(std::min<int64_t>(n, std::numeric_limits<uint32_t>::max())));
  }
  RETURN_IF_ERROR(ParseSampling(body, r));
  if (const json* v = Get(body, "stop")) RETURN_IF_ERROR(ParseStop(*v, r.generate));
  RETURN_IF_ERROR(ParseLogprobs(body, r));
  if (const json* v = Get(body, "moe")) RETURN_IF_ERROR(ParseMoe(*v, r.generate));
  if (const json* v = Get(body, "speculative")) RETURN_IF_ERROR(ParseSpeculative(*v, r.generate));
  // Last, so that a model without a tokenizer still gets every other field checked.
  if (kind == ApiKind::kChat) {
    RETURN_IF_ERROR(ParseMessages(body, has_tokenizer, chat_template, r.generate));
  } else {
    RETURN_IF_ERROR(ParsePrompt(body, has_tokenizer, r.generate));
  }
  return r;
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, const std::string& body, const ChatTemplate& chat_template,
                                                 bool has_tokenizer) {
  const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::InvalidArgumentError("body: not valid JSON");
  }
  try {  // nlohmann reports type misuse by exception; keep it inside this file
    return Parse(kind, parsed, chat_template, has_tokenizer);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("body: ", e.what()));
  }
}

absl::Status ToOpenAiFieldNames(const absl::Status& status, const OpenAiRequest& r) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  const std::string message(status.message());
  const size_t colon = message.find(": ");
  if (colon == std::string::npos) return status;
  const std::string field = message.substr(0, colon);
  const std::string rest = message.substr(colon);
  const std::string prompt = r.kind == ApiKind::kChat ? "messages" : "prompt";
  std::string name;
  if (field == "text" || field == "prompt" || field == "token_ids") {
    name = prompt;
  } else if (field.rfind("token_ids[", 0) == 0) {
    name = "prompt" + field.substr(9);
  } else if (field == "max_new_tokens") {
    name = r.max_tokens_param;
    return absl::InvalidArgumentError(name + absl::StrReplaceAll(rest, {{"max_new_tokens", name}}));
  } else if (field.rfind("sampling.", 0) == 0) {
    name = field.substr(9);
  } else if (field == "logprobs") {
    name = r.kind == ApiKind::kChat ? "top_logprobs" : "logprobs";
  } else if (field.rfind("expert_budget.", 0) == 0) {
    name = "moe." + field;
  } else {
    name = field;  // stop, stop[i]: the same name in both APIs
  }
  return absl::InvalidArgumentError(name + rest);
}

}  // namespace moeserve
