// The JSON bodies of the OpenAI-compatible API, built from the scheduler's TokenEvents:
// text_completion / chat.completion objects, their streaming chunks (text_completion /
// chat.completion.chunk with delta), usage, logprobs in each endpoint's shape, and the `moe`
// extension with per-layer routing totals of the request.
#ifndef MOESERVE_SERVER_OPENAI_OPENAI_RESPONSE_H_
#define MOESERVE_SERVER_OPENAI_OPENAI_RESPONSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer.h"
#include "scheduler/request.h"
#include "server/openai/openai_request.h"

namespace moeserve {

// Appends `next` to `into`: token ids, text and logprobs concatenate; counts, finish reason,
// error and MoE stats are the latest.
void MergeEvent(TokenEvent& into, TokenEvent&& next);

// The fixed facts of one response. Thread-safety: used by one thread at a time.
class ResponseBuilder {
 public:
  // `tokenizer` may be null (token strings become "<id>").
  ResponseBuilder(const OpenAiRequest& request, std::string id, std::string model, const Tokenizer* tokenizer);

  // Streaming. Chat's first chunk: the assistant role with empty content.
  nlohmann::json RoleChunk() const;
  // A chunk with the new text (and logprobs) of `delta`; finish_reason null.
  nlohmann::json DeltaChunk(const TokenEvent& delta);
  // The chunk with the finish reason (and the moe stats) of the final event.
  nlohmann::json FinishChunk(const TokenEvent& final_event) const;
  // The usage chunk (stream_options.include_usage): empty choices.
  nlohmann::json UsageChunk(const TokenEvent& final_event) const;

  // Non-streaming: the whole completion from all events merged.
  nlohmann::json Complete(const TokenEvent& merged);

  // "length" or "stop" (finished normally); the others are errors, not finish reasons.
  static const char* FinishReasonName(FinishReason reason);

 private:
  nlohmann::json Base(const char* object) const;
  nlohmann::json Logprobs(const std::vector<TokenLogprobs>& logprobs);
  std::string TokenText(int32_t id) const;
  static nlohmann::json Usage(const TokenEvent& e);
  nlohmann::json Moe(const TokenEvent& e) const;

  const OpenAiRequest& request_;
  const std::string id_;
  const std::string model_;
  const Tokenizer* tokenizer_;
  const int64_t created_;
  size_t text_offset_ = 0;  // completions logprobs: bytes of token text so far
};

// SSE framing of one JSON value ("data: {...}\n\n"); invalid UTF-8 is replaced, never thrown.
std::string SseEvent(const nlohmann::json& value);
std::string Dump(const nlohmann::json& value);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_OPENAI_RESPONSE_H_
