// OpenAI-style errors: {"error": {"message", "type", "param", "code"}} with an HTTP status.
// Inside the HTTP front end every refusal is an absl::Status whose message starts with the
// OpenAI parameter it concerns ("temperature: must be in [0, 100]"), exactly as the gRPC
// validation names proto fields; ToApiError turns one into the response.
#ifndef MOESERVE_SERVER_OPENAI_API_ERROR_H_
#define MOESERVE_SERVER_OPENAI_API_ERROR_H_

#include <string>

#include "absl/status/status.h"

namespace moeserve {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty = null
  std::string code;   // empty = null

  std::string ToJson() const;
};

// InvalidArgument 400, Unauthenticated 401, NotFound 404, ResourceExhausted 429,
// Unavailable 503, DeadlineExceeded 504, anything else 500. For 400 the param is the message's
// leading field name (up to ": ").
ApiError ToApiError(const absl::Status& status);

}  // namespace moeserve

#endif  // MOESERVE_SERVER_OPENAI_API_ERROR_H_
