// libFuzzer target: request validation on arbitrary (serialized) GenerateRequests.
#include <cmath>
#include <cstdint>

#include "server/request_validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moeserve::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  moeserve::ValidationLimits limits;
  limits.vocab_size = 1000;
  limits.max_context = 512;
  limits.eos_token_ids = {2};
  auto params = moeserve::ValidateGenerateRequest(request, nullptr, limits);
  if (params.ok()) {
    // What passes validation is safe to schedule.
    const int64_t total = static_cast<int64_t>(params->prompt.size()) + params->max_new_tokens;
    if (params->prompt.empty() || params->max_new_tokens < 1 || total > limits.max_context) __builtin_trap();
    for (int32_t id : params->prompt) {
      if (id < 0 || id >= limits.vocab_size) __builtin_trap();
    }
    if (!std::isfinite(params->sampling.temperature) || params->sampling.temperature < 0) __builtin_trap();
  }
  return 0;
}
