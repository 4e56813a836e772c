// Parses the body of POST /v1/completions and /v1/chat/completions into the gRPC API's
// GenerateRequest, which then goes through the one shared validation (ValidateGenerateRequest):
// both front ends enforce the same bounds and the same defaults. This file checks only what
// is OpenAI-specific: JSON types, which fields exist, and values the server does not support
// (n > 1, echo, tools, ...). Unknown fields are refused, never ignored.
//
// Every error is InvalidArgument whose message starts with the OpenAI parameter's name.
#ifndef MOESERVE_SERVER_OPENAI_OPENAI_REQUEST_H_
#define MOESERVE_SERVER_OPENAI_OPENAI_REQUEST_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moeserve/v1/inference.pb.h"
#include "server/openai/chat_template.h"

namespace moeserve {

enum class ApiKind { kCompletion, kChat };

struct OpenAiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // report logprobs
  int top_logprobs = 0;        // alternatives per token (0 = only the chosen token's logprob)
  std::string max_tokens_param = "max_tokens";  // the name the client used, for errors
  v1::GenerateRequest generate;  // what the shared validation sees
};

// `has_tokenizer`: without one, text prompts and chat are refused here (token-id prompts work).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, const std::string& body, const ChatTemplate& chat_template,
                                                 bool has_tokenizer);

// Renames the proto field that a ValidateGenerateRequest error starts with to the OpenAI
// parameter the client sent ("sampling.temperature: ..." -> "temperature: ...").
absl::Status ToOpenAiFieldNames(const absl::Status& status, const OpenAiRequest& request);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_OPENAI_REQUEST_H_
