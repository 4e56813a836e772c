// Validates a GenerateRequest and turns it into the scheduler's RequestParams. Every refusal
// is INVALID_ARGUMENT with a message that starts with the field's name.
#ifndef MOESERVE_SERVER_REQUEST_VALIDATION_H_
#define MOESERVE_SERVER_REQUEST_VALIDATION_H_

#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine_info.h"
#include "engine/tokenizer.h"
#include "moeserve/v1/inference.pb.h"
#include "scheduler/request.h"
#include "server/server_config.h"

namespace moeserve {

struct ValidationLimits {
  int64_t vocab_size = 0;
  int64_t max_context = 0;
  int default_max_new_tokens = 256;
  int max_new_tokens_limit = 4096;
  int max_prompt_tokens = 0;  // 0 = max_context
  std::vector<int64_t> eos_token_ids;
  ExpertBudget default_budget;  // model.expert_budget; request fields override it
};

// The limits of the server's configuration and the model's facts; every front end (gRPC, the
// OpenAI-compatible HTTP API) validates against these, so both enforce the same bounds.
ValidationLimits MakeValidationLimits(const ServerConfig& config, const EngineInfo& info);

absl::StatusOr<RequestParams> ValidateGenerateRequest(const v1::GenerateRequest& request, const Tokenizer* tokenizer,
                                                      const ValidationLimits& limits);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_REQUEST_VALIDATION_H_
