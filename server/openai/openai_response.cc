#include "server/openai/openai_response.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace moeserve {

using nlohmann::json;

void MergeEvent(TokenEvent& into, TokenEvent&& next) {
  into.token_ids.insert(into.token_ids.end(), next.token_ids.begin(), next.token_ids.end());
  into.text += next.text;
  for (TokenLogprobs& lp : next.logprobs) into.logprobs.push_back(std::move(lp));
  into.prompt_tokens = next.prompt_tokens;
  into.completion_tokens = next.completion_tokens;
  into.finish = next.finish;
  into.error = std::move(next.error);
  if (!next.moe_stats.empty()) into.moe_stats = std::move(next.moe_stats);
}

std::string Dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string SseEvent(const json& value) { return absl::StrCat("data: ", Dump(value), "\n\n"); }

ResponseBuilder::ResponseBuilder(const OpenAiRequest& request, std::string id, std::string model,
                                 const Tokenizer* tokenizer)
    : request_(request),
      id_(std::move(id)),
      model_(std::move(model)),
      tokenizer_(tokenizer),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {}

const char* ResponseBuilder::FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStopToken:
    case FinishReason::kStopSequence: return "stop";
    default: return nullptr;
  }
}

json ResponseBuilder::Base(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
}

std::string ResponseBuilder::TokenText(int32_t id) const {
  if (tokenizer_ == nullptr) return absl::StrCat("<", id, ">");
  // SentencePiece marks a leading space with U+2581; clients expect the space itself.
  return absl::StrReplaceAll(tokenizer_->Piece(id), {{"\xE2\x96\x81", " "}});
}

json ResponseBuilder::Logprobs(const std::vector<TokenLogprobs>& logprobs) {
  if (request_.kind == ApiKind::kCompletion) {
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
    for (const TokenLogprobs& lp : logprobs) {
      const std::string text = TokenText(lp.token_id);
      tokens.push_back(text);
      token_logprobs.push_back(lp.logprob);
      json alternatives = json::object();
      for (size_t i = 0; i < lp.top.size() && static_cast<int>(i) < request_.top_logprobs; ++i) {
        alternatives[TokenText(lp.top[i].first)] = lp.top[i].second;
      }
      top.push_back(std::move(alternatives));
      offsets.push_back(text_offset_);
      text_offset_ += text.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
  }
  auto entry = [this](int32_t id, float logprob) {
    const std::string text = TokenText(id);
    json bytes = json::array();
    for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
    return json{{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
  };
  json content = json::array();
  for (const TokenLogprobs& lp : logprobs) {
    json e = entry(lp.token_id, lp.logprob);
    json top = json::array();
    for (size_t i = 0; i < lp.top.size() && static_cast<int>(i) < request_.top_logprobs; ++i) {
      top.push_back(entry(lp.top[i].first, lp.top[i].second));
    }
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", content}};
}

json ResponseBuilder::Usage(const TokenEvent& e) {
  return {{"prompt_tokens", e.prompt_tokens},
          {"completion_tokens", e.completion_tokens},
          {"total_tokens", e.prompt_tokens + e.completion_tokens}};
}

json ResponseBuilder::Moe(const TokenEvent& e) const {
  json layers = json::array();
  for (const LayerRouting& l : e.moe_stats) {
    const double ratio = l.tokens > 0 && l.num_experts > 0
                             ? static_cast<double>(l.activations) / static_cast<double>(l.tokens) / l.num_experts
                             : 0.0;
    layers.push_back({{"layer", l.layer},
                      {"num_experts", l.num_experts},
                      {"tokens", l.tokens},
                      {"activations", l.activations},
                      {"activation_ratio", ratio}});
  }
  return {{"layers", layers}};
}

json ResponseBuilder::RoleChunk() const {
  json c = Base("chat.completion.chunk");
  c["choices"] = json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (request_.include_usage) c["usage"] = nullptr;
  return c;
}

json ResponseBuilder::DeltaChunk(const TokenEvent& delta) {
  const json logprobs = request_.logprobs ? Logprobs(delta.logprobs) : json();
  json c;
  if (request_.kind == ApiKind::kChat) {
    c = Base("chat.completion.chunk");
    c["choices"] = json::array(
        {{{"index", 0}, {"delta", {{"content", delta.text}}}, {"logprobs", logprobs}, {"finish_reason", nullptr}}});
  } else {
    c = Base("text_completion");
    c["choices"] =
        json::array({{{"index", 0}, {"text", delta.text}, {"logprobs", logprobs}, {"finish_reason", nullptr}}});
  }
  if (request_.include_usage) c["usage"] = nullptr;
  return c;
}

json ResponseBuilder::FinishChunk(const TokenEvent& e) const {
  const char* reason = FinishReasonName(e.finish);
  json c;
  if (request_.kind == ApiKind::kChat) {
    c = Base("chat.completion.chunk");
    c["choices"] = json::array({{{"index", 0}, {"delta", json::object()}, {"logprobs", nullptr}, {"finish_reason", reason}}});
  } else {
    c = Base("text_completion");
    c["choices"] = json::array({{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", reason}}});
  }
  if (request_.include_usage) c["usage"] = nullptr;
  c["moe"] = Moe(e);
  return c;
}

json ResponseBuilder::UsageChunk(const TokenEvent& e) const {
  json c = Base(request_.kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion");
  c["choices"] = json::array();
  c["usage"] = Usage(e);
  return c;
}

json ResponseBuilder::Complete(const TokenEvent& merged) {
  const json logprobs = request_.logprobs ? Logprobs(merged.logprobs) : json();
  const char* reason = FinishReasonName(merged.finish);
  json c;
  if (request_.kind == ApiKind::kChat) {
    c = Base("chat.completion");
    c["choices"] = json::array({{{"index", 0},
                                 {"message", {{"role", "assistant"}, {"content", merged.text}}},
                                 {"logprobs", logprobs},
                                 {"finish_reason", reason}}});
  } else {
    c = Base("text_completion");
    c["choices"] =
        json::array({{{"index", 0}, {"text", merged.text}, {"logprobs", logprobs}, {"finish_reason", reason}}});
  }
  c["usage"] = Usage(merged);
  c["moe"] = Moe(merged);
  return c;
}

}  // namespace moeserve
